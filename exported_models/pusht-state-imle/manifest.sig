{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "51iKKFOB8eKJNSyTpBvtmVWSOKPvVe+HHyhSGWFEKtzSGgvdV0GOISGqfgAvOsqOu6kW8rI39HOSMtKtfkvXCQ=="
}
