{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "O87hIRI8VA3keRZbDA7ccWhl+Yh5znpjtG90qya/FQ0qqnOsCqRRpPc1uEQASOApMZ9OSxcpYzftjW+6vHhLDQ=="
}
