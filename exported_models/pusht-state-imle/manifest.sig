{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "AfV9OxydrSZuTVBCa7akTvxW7ILzPTRTcXEzOK2bXFCm4TDCMh4pWNqw7SxxaqEFF9d/eOx179Jefa7/+wBSBQ=="
}
