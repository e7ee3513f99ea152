{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "el5P8GJN1I6Bd7E/tr2QJ4lwFAgGDDsAn5/haHfN3p3hrsVLpBG125Cu0u3L+8dVL2WjMqfSrC9mu9FpQQFbDg=="
}
