/*
 * procvault protocol v2, model 3 of 4: attestation and announcements, epochs and rotation,
 * and the readers of results, against an adversary who holds Kafka and has an identity key
 * of its own (an impersonator).
 *
 * Symbolic cryptography: a key is a number; a signature, a certificate or evidence is a
 * record naming the key that made it and what it binds; only the holder of a key can make a
 * record naming it. Keys: the vault's identity ID_V (pinned in registry.json), the
 * impersonator's identity ID_X, the vault's epoch keys K1, K2 (held in its TEE), the
 * impersonator's epoch key KX.
 *
 * An announcement (vault.keys) = (epoch, key, certificate by identity c over (epoch, key),
 * nonce, evidence by identity ev over (epoch, key, nonce, identity), signed by key s).
 * The vault answers every nonce on vault.attest with the current epoch's announcement. The
 * adversary can replay every announcement it saw and make its own: certified by ID_X, signed
 * by KX, with evidence signed by ID_X (simulated) for any nonce; with ADV_COMPROMISE it also
 * holds the retired epoch's key K1 (the old TEE instance was compromised after rotation): it
 * can sign announcements with K1, but evidence for a new nonce needs ID_V or the TEE.
 *
 * The agent challenges with a fresh nonce and accepts an announcement only if (a) the nonce
 * is its own, (b) the certificate is by the pinned identity, (c) the signature is by the
 * certified key, (d) the evidence is by the pinned identity and binds the nonce; then it
 * encrypts to the key. It re-challenges periodically and moves to a newer epoch only through
 * such an answer. The reader (procvault results) learns epoch keys from any announcement
 * that passes (b)-(c) and accepts a result only if it is signed by the key it learned for
 * the result's epoch; two different keys for one epoch make that epoch untrusted.
 *
 * Configurations (spin -D...):
 *   M_UNPINNED        mutant: any identity is trusted (the one the announcement names)
 *   M_NONCE_UNBOUND   mutant: the evidence does not bind the nonce (needs ADV_COMPROMISE)
 *   M_NO_NONCE        mutant: the agent accepts any valid announcement, whatever its nonce
 *                     (neither the announcement's nor the evidence's is checked)
 *   ADV_COMPROMISE    the adversary holds K1 once epoch 2 is announced
 */

#define ID_V 1
#define ID_X 2
#define K1 1
#define K2 2
#define KX 3
#define NONE 0

/* ------------------------------------------------------------------ vault.keys */
#define AN 6
byte a_ep[AN]; byte a_key[AN]; byte a_cert[AN]; byte a_nonce[AN]; byte a_ev[AN];
byte a_evn[AN];     /* the nonce the evidence binds (NONE: not bound) */
byte a_sig[AN];
byte alen;
byte cur_ep = 1;    /* the vault's current epoch */

/* ------------------------------------------------------------------ vault.attest */
byte challenge;     /* the agent's outstanding nonce (NONE: none) */
byte answered;      /* the last nonce the vault answered */
byte nonces;        /* fresh nonces used so far */

/* ------------------------------------------------------------------ results */
#define RN 3
byte r_ep[RN]; byte r_sig[RN]; bit r_genuine[RN];
byte rlen;

/* ------------------------------------------------------------------ agent, reader */
byte ag_key;        /* the key it encrypts to (NONE: not attested) */
byte ag_ep;
byte rd_key[3];     /* the reader's key per epoch (NONE; 255: untrusted) */
byte rd_seen;       /* announcements read */
byte rd_res;        /* results read */

#ifndef NONCES
#define NONCES 2
#endif
#ifndef ADV
#define ADV 2
#endif
byte adv = ADV;
bit compromised;

hidden byte i, x, k, e, ok;
hidden byte encrypts_only_to_a_vault_key, accepts_only_vault_results;
hidden byte after_an_answer_to_its_nonce_from_the_pinned_identity;

#ifdef M_UNPINNED
#define PINNED(id) ((id) != NONE)              /* whatever identity the announcement names */
#else
#define PINNED(id) ((id) == ID_V)
#endif
/* a certificate by identity c over (epoch e, key k) exists only if its holder made it */
#define CERT_OK(j) (PINNED(a_cert[j]) && a_sig[j] == a_key[j])

inline announce(ep, key, cert, nonce, ev, evn, sig) {
  if
  :: alen < AN ->
     a_ep[alen] = ep; a_key[alen] = key; a_cert[alen] = cert; a_nonce[alen] = nonce;
     a_ev[alen] = ev; a_evn[alen] = evn; a_sig[alen] = sig; alen++
  :: else -> skip
  fi
}

/* the vault's attestation responder (streams/provisioning.py AttestationResponder) and its
   rotation (procvault keys rotate) */
proctype Vault() {
end:
  do
  :: atomic { challenge != NONE && answered != challenge ->
       answered = challenge;
       announce(cur_ep, cur_ep, ID_V, challenge, ID_V, challenge, cur_ep);
       printf("vault: answers nonce %d with epoch %d\n", challenge, cur_ep) }
  :: atomic { cur_ep == 1 ->
       cur_ep = 2;
       announce(2, K2, ID_V, NONE, ID_V, NONE, K2);       /* the unsolicited announcement */
#ifdef ADV_COMPROMISE
       compromised = 1;
#endif
       printf("vault: rotates to epoch 2\n") }
  /* results signed by the epoch key */
  :: atomic { rlen < RN - 1 ->
       r_ep[rlen] = cur_ep; r_sig[rlen] = cur_ep; r_genuine[rlen] = 1; rlen++;
       printf("vault: publishes a result of epoch %d\n", cur_ep) }
  od
}

/* the agent (streams/provisioning.py attest_vault, procvault/organization/agent.py Agent) */
proctype Agent() {
end:
  do
  /* challenge with a fresh nonce (at start, and to re-verify) */
  :: atomic { challenge == NONE && nonces < NONCES -> nonces++; challenge = nonces;
       printf("agent: challenges with nonce %d\n", challenge) }
  /* check an announcement */
  :: atomic { challenge != NONE && alen > 0 ->
       select (x : 0 .. alen - 1);
       ok = CERT_OK(x) && PINNED(a_ev[x]);
#ifndef M_NO_NONCE
       ok = ok && a_nonce[x] == challenge;                 /* (a) */
#ifndef M_NONCE_UNBOUND
       ok = ok && a_evn[x] == challenge;                   /* (d) the evidence binds it */
#endif
#endif
       if
       :: ok && (ag_key == NONE || a_ep[x] >= ag_ep) ->
          ag_key = a_key[x]; ag_ep = a_ep[x];
          printf("agent: accepts epoch %d key %d, encrypts to it\n", ag_ep, ag_key);
          /* it encrypts only to a key of the vault, after an announcement bound to its own
             nonce (the evidence too: a proof of the vault running now) and to the pinned
             identity */
          encrypts_only_to_a_vault_key = (ag_key == K1 || ag_key == K2);
          assert(encrypts_only_to_a_vault_key);
          after_an_answer_to_its_nonce_from_the_pinned_identity =
            (a_nonce[x] == challenge && a_evn[x] == challenge && a_cert[x] == ID_V &&
             a_ev[x] == ID_V);
          assert(after_an_answer_to_its_nonce_from_the_pinned_identity);
          challenge = NONE
       :: else -> skip
       fi;
       x = 0; ok = 0 }
  od
}

/* a reader of results (procvault results) */
proctype Reader() {
end:
  do
  /* learn an epoch key from the next announcement that chains to the pinned identity */
  :: atomic { rd_seen < alen ->
       x = rd_seen; rd_seen++;
       if
       :: CERT_OK(x) && PINNED(a_ev[x]) && a_ep[x] <= 2 ->
          if
          :: rd_key[a_ep[x]] == NONE -> rd_key[a_ep[x]] = a_key[x]
          :: rd_key[a_ep[x]] != NONE && rd_key[a_ep[x]] != a_key[x] -> rd_key[a_ep[x]] = 255
          :: else -> skip
          fi
       :: else -> skip
       fi;
       x = 0 }
  /* verify the next result */
  :: atomic { rd_res < rlen ->
       x = rd_res; rd_res++;
       if
       :: rd_key[r_ep[x]] != NONE && rd_key[r_ep[x]] != 255 && r_sig[x] == rd_key[r_ep[x]] ->
          printf("reader: accepts a result of epoch %d\n", r_ep[x]);
          accepts_only_vault_results = r_genuine[x] || (compromised && r_sig[x] == K1);
          assert(accepts_only_vault_results)
       :: else -> skip
       fi;
       x = 0 }
  od
}

proctype Adversary() {
end:
  do
  /* replay any announcement it has seen */
  :: atomic { adv > 0 && alen > 0 && alen < AN ->
       adv--; select (x : 0 .. alen - 1);
       announce(a_ep[x], a_key[x], a_cert[x], a_nonce[x], a_ev[x], a_evn[x], a_sig[x]);
       printf("adversary: replays announcement %d\n", x); x = 0 }
  /* impersonate: its own key, certified and attested by its own identity, for the nonce
     it saw, for either epoch */
  :: atomic { adv > 0 && alen < AN ->
       adv--; select (e : 1 .. 2);
       announce(e, KX, ID_X, challenge, ID_X, challenge, KX);
       printf("adversary: announces its own key for epoch %d, nonce %d\n", e, challenge);
       e = 0 }
  /* with the retired epoch's key: sign a fresh answer with it, replaying old evidence */
  :: atomic { adv > 0 && compromised && alen < AN ->
       adv--;
       k = NONE;
       i = 0;
       do
       :: i < alen -> if :: a_key[i] == K1 && a_ev[i] == ID_V -> k = a_evn[i] :: else -> skip fi; i++
       :: else -> break
       od;
       announce(1, K1, ID_V, challenge, ID_V, k, K1);
       printf("adversary: answers nonce %d with the compromised epoch-1 key\n", challenge);
       i = 0; k = 0 }
  /* forge a result: signed by its own key, or by the compromised one */
  :: atomic { adv > 0 && rlen < RN ->
       adv--; select (e : 1 .. 2);
       r_ep[rlen] = e; r_sig[rlen] = KX; r_genuine[rlen] = 0;
       if :: compromised -> r_ep[rlen] = 1; r_sig[rlen] = K1 :: true fi;
       rlen++;
       printf("adversary: publishes a forged result of epoch %d\n", r_ep[rlen - 1]); e = 0 }
  od
}

init {
  atomic {
    /* the vault's first announcement goes out at start, with a random nonce */
    announce(1, K1, ID_V, NONE, ID_V, NONE, K1);
    run Vault(); run Agent(); run Reader(); run Adversary()
  }
}
