{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "tRty89N+RLBcXvkMnJ0FcMhtUxDlOmh0tKU6Iwp3YaPPHDr/nAz8aowPe20oFMo46Y56STKmN24IVaz4yhrFBQ=="
}
