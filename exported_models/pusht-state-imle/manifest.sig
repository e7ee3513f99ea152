{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "O+6j855H4bY+FZdYrPSItUs4bQHC0WNS0TXnmTUrp3KQQC8q7BTE0CkkkgkamAFD79AoPSp5FE5xrWVULLFLDw=="
}
