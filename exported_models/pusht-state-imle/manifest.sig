{
  "format": "imle-policy-signature",
  "version": 1,
  "algorithm": "ed25519",
  "key_id": "166a878419637cd9",
  "signature": "VnDeVhwCQ5i6XIbdH9Rqd0TddoWNkZiWv66k05IeijgndxuFFcDMZwnSuwcaoPHn3Poo4G8bl7g43jVl5dBsBw=="
}
