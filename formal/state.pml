/*
 * procvault protocol v2, model 2 of 4: the vault's sealed state. Two vault workers share two
 * partitions; they crash, restart and rebalance; a partition's state is restored from the
 * compacted changelog (streams/changelog.py: commit version, record count, multiset hash,
 * bound to key and partition); an adversary who holds Kafka replays stale sealed records,
 * copies records across partitions, re-injects aborted transactions (of a crashed worker or
 * of a zombie) as committed, hides records from a restore, and serves an event record of one
 * partition to the other partition's engine.
 *
 * One organization; partition p holds one case with one event e_p (an end-of-case event) in
 * its event log. A worker owning p reads it, applies it and commits, in one transaction: the
 * case record (c), the partition metadata (m: version V, the guard, the multiset hash of the
 * live case records), the result and a commit record (p, V, H) on the outputs, and the
 * offsets. The commit is atomic; a worker crashing in the middle leaves an aborted
 * transaction whose records the adversary can read, and whose abort marker it can replace
 * with a commit marker (in the changelog's partition, or on the outputs: one action each).
 *
 * The multiset hash is symbolic: every write attempt gets a unique id (wid); the metadata
 * names the wid of the case record it expects, the commit record the wid of its transaction.
 *
 * Configurations (spin -D...): none = the protocol with the fixes of docs/formal.md (a
 * worker that left the group is fenced; the restore requires the metadata's (V, H) to be the
 * outputs' newest commit record);
 *   SPEC_FLOOR          the restore check of docs/protocol.md: multiset hash, count, and "not
 *                       below the largest version on the outputs"          (finding F6)
 *   SPEC_NOFENCE        no fencing of a worker that left the group: a zombie's transaction
 *                       commits after the new owner restored               (finding F5)
 *   ADV=2               two markers: changelog and outputs resurrected together (finding F4)
 *   ADV_COPY            a weaker adversary: it only appends copies of committed records
 *   M_NO_ROLLBACK_CHECK mutant: restore takes the latest records without any check
 *   M_UNBOUND_EVENT     mutant: the partition is not in the event record's associated data
 *   M_UNBOUND_STATE     mutant: sealed state is not bound to its partition (with SPEC_FLOOR:
 *                       the commit-record check alone refuses another partition's state)
 */

#ifndef ADV
#define ADV 1            /* adversary actions */
#endif
#ifndef CRASH
#define CRASH 1          /* worker crashes (in the middle of a commit) */
#endif
#ifndef REBAL
#define REBAL 1          /* rebalances */
#endif
#ifndef EXPEL
#define EXPEL 1          /* 1: a rebalance may expel a stalled worker (it becomes a zombie) */
#endif

#define NP 2             /* partitions */
#define NW 2             /* workers */
#define NONE 255

/* ------------------------------------------------------------------ changelog */
#define CLN 7
#define CI(p, i) ((p) * CLN + (i))
#define META 1
#define CASE 2
#define OPEN 1
#define COMMITTED 2
#define ABORTED 3
byte ck[NP * CLN];   /* kind */
byte cvv[NP * CLN];  /* version that wrote it */
byte cw[NP * CLN];   /* wid: the write attempt (symbolic value) */
byte cb[NP * CLN];   /* the partition it is sealed to */
byte cst[NP * CLN];  /* transaction status as the broker reports it */
bit  chid[NP * CLN]; /* hidden from restores by the adversary */
byte cg[NP * CLN];   /* META: guard (1: the partition's event frame admitted) */
byte cx[NP * CLN];   /* META: wid of the case record expected (0: none); CASE: applied bits */
byte clen[NP];
byte nwid;           /* write attempts so far */

/* ------------------------------------------------------------------ outputs */
/* every transaction writes, beside its results, a commit record (p, V, H) on the outputs
   (the fix for F6; the spec has only "not below the largest version on the outputs") */
#define OLN 4
#define OI(p, i) ((p) * OLN + (i))
byte ov[NP * OLN];   /* version */
byte ow[NP * OLN];   /* wid of its transaction (H) */
byte ost[NP * OLN];
bit  ohid[NP * OLN];
byte olen[NP];

/* ------------------------------------------------------------------ group */
byte own[NP];        /* owner of the partition in the current group generation */
byte gen[NP];        /* the partition's assignment generation (fencing) */
byte rebal;
bit  refused[NP];    /* ghost: a restore was refused (rollback detected) */
bit  tampered;       /* ghost: the adversary wrote to or hid records of the changelog */

/* ------------------------------------------------------------------ workers */
bit  wown[NW * NP];  /* the worker holds the partition's state */
byte wgen[NW * NP];  /* ... under this assignment generation */
byte wv[NW * NP];    /* version */
byte wg[NW * NP];    /* guard */
byte wa[NW * NP];    /* applied: bit 0 e0, bit 1 e1 */
byte wc[NW * NP];    /* wid of its case record (0: none) */
byte wrd[NW * NP];   /* event offset read (0/1) */
bit  wdirty[NW * NP];
byte wn[NW * NP];    /* ghost: events applied since its last commit or restore */
byte crashes;
#define WI(w, p) ((w) * NP + (p))

/* ------------------------------------------------------------------ ghosts */
byte dur[NP];        /* committed applications of e_p (in any partition) */
byte hv[NP];         /* the last committed state of p: version, guard, applied */
byte hg[NP];
byte ha[NP];
byte adv = ADV;

hidden byte i, m, c, c2, q;
hidden byte restored_state_is_the_last_committed, committed_at_most_once;
hidden byte applied_in_its_own_partition, every_event_committed_once;

/* -------------------------------------------------------------- restore (changelog.py) */
#ifdef M_UNBOUND_STATE
#define SEALED_TO(x, p) 1
#else
#define SEALED_TO(x, p) (cb[x] == (p))                  /* the seal's context names p */
#endif

/* worker w restores partition p: the latest visible committed record of each key, sealed
   to p; then the rollback check */
inline restore(w, p) {
  m = NONE; c = NONE;
  i = 0;
  do
  :: i < clen[p] ->
     if
     :: cst[CI(p, i)] == COMMITTED && !chid[CI(p, i)] && SEALED_TO(CI(p, i), p) -> if :: ck[CI(p, i)] == META -> m = i :: else -> c = i fi
     :: else -> skip
     fi;
     i++
  :: else -> break
  od;
  /* the newest commit record on the outputs (read back) */
  c2 = NONE;
  i = 0;
  do
  :: i < olen[p] -> if :: ost[OI(p, i)] == COMMITTED && !ohid[OI(p, i)] -> c2 = i
                       :: else -> skip fi; i++
  :: else -> break
  od;
  q = 1;                                               /* the check passes */
#ifndef M_NO_ROLLBACK_CHECK
  if
  :: m == NONE -> q = (c == NONE)                      /* a case record without metadata */
  :: else ->
     if                                                /* the multiset hash and count */
     :: cx[CI(p, m)] == 0 -> q = (c == NONE)
     :: else -> q = (c != NONE && cw[CI(p, c)] == cx[CI(p, m)] &&
                     cvv[CI(p, c)] <= cvv[CI(p, m)])
     fi
  fi;
#ifdef SPEC_FLOOR
  if                                                   /* not below the outputs' version */
  :: q && c2 != NONE && (m == NONE -> 0 : cvv[CI(p, m)]) < ov[OI(p, c2)] -> q = 0
  :: else -> skip
  fi;
#else
  if                                                   /* the outputs' newest commit record */
  :: q && c2 == NONE -> q = (m == NONE)
  :: q && c2 != NONE -> q = (m != NONE && cvv[CI(p, m)] == ov[OI(p, c2)] &&
                             cw[CI(p, m)] == ow[OI(p, c2)])
  :: else -> skip
  fi;
#endif
#endif
  if
  :: q ->
     wown[WI(w, p)] = 1; wgen[WI(w, p)] = gen[p]; wdirty[WI(w, p)] = 0; wn[WI(w, p)] = 0;
     if
     :: m == NONE -> wv[WI(w, p)] = 0; wg[WI(w, p)] = 0; wc[WI(w, p)] = 0
     :: else -> wv[WI(w, p)] = cvv[CI(p, m)]; wg[WI(w, p)] = cg[CI(p, m)];
                wc[WI(w, p)] = cx[CI(p, m)]
     fi;
     wa[WI(w, p)] = (c == NONE -> 0 : cx[CI(p, c)]);
     wrd[WI(w, p)] = wg[WI(w, p)];                    /* resume after what it admitted */
     printf("worker %d: restores p%d at version %d\n", w, p, wv[WI(w, p)]);
     restored_state_is_the_last_committed =
       (wv[WI(w, p)] == hv[p] && wg[WI(w, p)] == hg[p] && wa[WI(w, p)] == ha[p]);
     assert(restored_state_is_the_last_committed)
  :: else ->
     refused[p] = 1;
     printf("worker %d: refuses p%d (rollback detected)\n", w, p)
  fi;
  m = 0; c = 0; c2 = 0; q = 0; i = 0
}

#ifdef M_UNBOUND_EVENT
#define BOUND_EVENT(b, p) 1
#else
#define BOUND_EVENT(b, p) ((b) == (p))          /* the header tag and AD name the partition */
#endif

/* the partition engine admits and applies an event frame bound to partition b */
inline step(w, p, b) {
  if
  :: wg[WI(w, p)] == 0 && BOUND_EVENT(b, p) ->
     wg[WI(w, p)] = 1;
     wa[WI(w, p)] = wa[WI(w, p)] | (1 << b); wn[WI(w, p)] = wn[WI(w, p)] | (1 << b);
     applied_in_its_own_partition = (b == p); assert(applied_in_its_own_partition);
     wdirty[WI(w, p)] = 1;
     printf("worker %d: p%d applies e%d\n", w, p, b)
  :: else -> printf("worker %d: p%d refuses a frame of p%d\n", w, p, b)   /* replay, bad_tag */
  fi
}

/* commit worker w's transaction for p: case record, metadata, result, offsets */
inline commit(w, p, st) {
  nwid++;
  i = CI(p, clen[p]);
  ck[i] = CASE; cvv[i] = wv[WI(w, p)] + 1; cw[i] = nwid; cb[i] = p; cst[i] = st;
  cx[i] = wa[WI(w, p)];
  i = CI(p, clen[p] + 1);
  ck[i] = META; cvv[i] = wv[WI(w, p)] + 1; cw[i] = nwid; cb[i] = p; cst[i] = st;
  cg[i] = wg[WI(w, p)]; cx[i] = nwid;
  clen[p] = clen[p] + 2;
  i = OI(p, olen[p]);
  ov[i] = wv[WI(w, p)] + 1; ow[i] = nwid; ost[i] = st; olen[p]++;
  i = 0
}

proctype Worker(byte w) {
  byte p;
end:
  do
  /* restore an assigned partition (the rebalance listener) */
  :: atomic { own[0] == w && !wown[WI(w, 0)] && !refused[0] -> restore(w, 0) }
  :: atomic { own[1] == w && !wown[WI(w, 1)] && !refused[1] -> restore(w, 1) }
  /* read the partition's event record (or, the adversary, the other partition's) */
  :: atomic { wown[WI(w, 0)] && wrd[WI(w, 0)] == 0 -> wrd[WI(w, 0)] = 1; step(w, 0, 0) }
  :: atomic { wown[WI(w, 1)] && wrd[WI(w, 1)] == 0 -> wrd[WI(w, 1)] = 1; step(w, 1, 1) }
  :: atomic { adv > 0 && wown[WI(w, 0)] -> adv--; step(w, 0, 1) }
  :: atomic { adv > 0 && wown[WI(w, 1)] -> adv--; step(w, 1, 0) }
  /* commit a batch (one transaction) */
  :: atomic { (wown[WI(w, 0)] && wdirty[WI(w, 0)]) || (wown[WI(w, 1)] && wdirty[WI(w, 1)]) ->
       if
       :: wown[WI(w, 0)] && wdirty[WI(w, 0)] -> p = 0
       :: wown[WI(w, 1)] && wdirty[WI(w, 1)] -> p = 1
       fi;
       if
       :: clen[p] + 2 <= CLN && olen[p] < OLN ->
#ifndef SPEC_NOFENCE
          if
          :: wgen[WI(w, p)] != gen[p] ->               /* fenced: the transaction aborts */
             commit(w, p, ABORTED); wown[WI(w, p)] = 0;
             printf("worker %d: fenced, its transaction for p%d aborts\n", w, p)
          :: else ->
#endif
             commit(w, p, COMMITTED);
             wv[WI(w, p)]++; wc[WI(w, p)] = nwid; wdirty[WI(w, p)] = 0;
             hv[p] = wv[WI(w, p)]; hg[p] = wg[WI(w, p)]; ha[p] = wa[WI(w, p)];
             dur[0] = dur[0] + (wn[WI(w, p)] & 1); dur[1] = dur[1] + ((wn[WI(w, p)] >> 1) & 1);
             wn[WI(w, p)] = 0;
             committed_at_most_once = (dur[0] <= 1 && dur[1] <= 1);
             assert(committed_at_most_once);
             printf("worker %d: commits p%d version %d\n", w, p, wv[WI(w, p)])
#ifndef SPEC_NOFENCE
          fi
#endif
       :: else -> skip
       fi;
       p = 0 }
  /* crash in the middle of a commit: the transaction aborts; the worker restarts with the
     same transactional id and restores its partitions again */
  :: atomic { crashes < CRASH && ((wown[WI(w, 0)] && wdirty[WI(w, 0)]) ||
                                  (wown[WI(w, 1)] && wdirty[WI(w, 1)])) ->
       crashes++;
       if
       :: wown[WI(w, 0)] && wdirty[WI(w, 0)] && clen[0] + 2 <= CLN && olen[0] < OLN ->
          commit(w, 0, ABORTED); printf("worker %d: its transaction for p0 aborts\n", w)
       :: wown[WI(w, 1)] && wdirty[WI(w, 1)] && clen[1] + 2 <= CLN && olen[1] < OLN ->
          commit(w, 1, ABORTED); printf("worker %d: its transaction for p1 aborts\n", w)
       :: true
       fi;
       wown[WI(w, 0)] = 0; wown[WI(w, 1)] = 0; wdirty[WI(w, 0)] = 0; wdirty[WI(w, 1)] = 0;
       printf("worker %d: crashes, restarts\n", w) }
  /* the partition was taken away: drop its state (after the last commit) */
  :: atomic { wown[WI(w, 0)] && own[0] != w && !wdirty[WI(w, 0)] && wgen[WI(w, 0)] != gen[0] ->
       wown[WI(w, 0)] = 0 }
  :: atomic { wown[WI(w, 1)] && own[1] != w && !wdirty[WI(w, 1)] && wgen[WI(w, 1)] != gen[1] ->
       wown[WI(w, 1)] = 0 }
  od
}

/* the group coordinator: a rebalance moves a partition to the other worker, after its owner
   finished its batch and dropped it; or, EXPEL, at once (the owner stalled past its session
   timeout and does not know yet: a zombie) */
proctype Group() {
end:
  do
  :: atomic { rebal < REBAL && (!wown[WI(own[0], 0)] || !wdirty[WI(own[0], 0)] || EXPEL) ->
       rebal++; gen[0]++;
       if :: !wdirty[WI(own[0], 0)] -> wown[WI(own[0], 0)] = 0 :: else -> skip fi;
       own[0] = 1 - own[0];
       printf("group: p0 moves to worker %d\n", own[0]) }
  :: atomic { rebal < REBAL && (!wown[WI(own[1], 1)] || !wdirty[WI(own[1], 1)] || EXPEL) ->
       rebal++; gen[1]++;
       if :: !wdirty[WI(own[1], 1)] -> wown[WI(own[1], 1)] = 0 :: else -> skip fi;
       own[1] = 1 - own[1];
       printf("group: p1 moves to worker %d\n", own[1]) }
  od
}

/* the adversary's actions on the changelog */
proctype Adversary() {
  byte p, x;
end:
  do
  /* append a copy of any record of any partition (stale, aborted, another partition's)
     to p's changelog, as committed */
  :: atomic { adv > 0 && clen[0] + clen[1] > 0 ->
       if :: p = 0 :: p = 1 fi;
       if :: clen[p] < CLN -> skip :: else -> p = 1 - p fi;
       if
       :: clen[p] < CLN && clen[0] > 0 -> select (x : 0 .. clen[0] - 1); x = CI(0, x)
       :: clen[p] < CLN && clen[1] > 0 -> select (x : 0 .. clen[1] - 1); x = CI(1, x)
       :: else -> x = NONE
       fi;
#ifdef ADV_COPY
       if :: x != NONE && cst[x] != COMMITTED -> x = NONE :: else -> skip fi;
#endif
       if
       :: x != NONE ->
          adv--; tampered = 1;
          i = CI(p, clen[p]);
          ck[i] = ck[x]; cvv[i] = cvv[x]; cw[i] = cw[x]; cb[i] = cb[x]; cst[i] = COMMITTED;
          cg[i] = cg[x]; cx[i] = cx[x]; clen[p]++;
          printf("adversary: appends a copy of a p%d record (version %d) to p%d\n", cb[x],
                 cvv[x], p)
       :: else -> skip
       fi;
       p = 0; x = 0; i = 0 }
#ifndef ADV_COPY
  /* replace the abort marker of a transaction with a commit marker: in the changelog of
     one partition, or on its outputs */
  :: atomic { adv > 0 ->
       select (x : 0 .. NP * CLN - 1);
       if
       :: cst[x] == ABORTED ->
          adv--; tampered = 1; p = x / CLN; q = cw[x];
          i = 0;
          do
          :: i < clen[p] -> if :: cw[CI(p, i)] == q -> cst[CI(p, i)] = COMMITTED
                               :: else -> skip fi; i++
          :: else -> break
          od;
          printf("adversary: shows an aborted transaction in p%d's changelog as committed\n", p)
       :: else -> skip
       fi;
       x = 0; p = 0; q = 0; i = 0 }
  :: atomic { adv > 0 ->
       select (x : 0 .. NP * OLN - 1);
       if
       :: ost[x] == ABORTED -> adv--; tampered = 1; ost[x] = COMMITTED;
          printf("adversary: shows an aborted commit record of p%d as committed\n", x / OLN)
       :: else -> skip
       fi;
       x = 0 }
  /* hide a record from a restore: in the changelog, or on the outputs */
  :: atomic { adv > 0 ->
       select (x : 0 .. NP * CLN - 1);
       if
       :: ck[x] != 0 && !chid[x] -> adv--; tampered = 1; chid[x] = 1;
          printf("adversary: hides a changelog record of p%d\n", x / CLN)
       :: else -> skip
       fi;
       x = 0 }
  :: atomic { adv > 0 ->
       select (x : 0 .. NP * OLN - 1);
       if
       :: ost[x] != 0 && !ohid[x] -> adv--; tampered = 1; ohid[x] = 1;
          printf("adversary: hides a commit record of p%d\n", x / OLN)
       :: else -> skip
       fi;
       x = 0 }
#endif
  od
}

init {
  atomic {
    own[0] = 0; own[1] = 1;
    run Worker(0); run Worker(1); run Group(); run Adversary()
  }
  /* every run ends; without tampering with the changelog every event is applied and
     committed exactly once and no partition is refused */
  timeout -> every_event_committed_once =
    (tampered || (dur[0] == 1 && dur[1] == 1 && !refused[0] && !refused[1]));
  assert(every_event_committed_once)
}
