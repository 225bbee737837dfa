/*
 * procvault protocol v2, model 4 of 4: the release stage (streams/release_stage.py). It reads
 * the vault workers' sealed pane partials from vault.partials, completes each pane, draws
 * its DP noise, publishes the noisy record on results.aggregates, and restarts after a crash
 * from its own sealed state; an adversary who holds Kafka reads every record (aborted ones
 * included), replays, reorders and drops partials.
 *
 * Two partitions, two panes: partition 0 reports pane 0 and pane 1, partition 1 only pane 1
 * (its pane 0 is empty: nobody reports an empty pane). vault.partials holds
 *   @0 P(p0, pane 0)   @1 P(p1, pane 1)   @2 P(p0, pane 1)
 * committed. A partial of pane i from partition p means "p has closed every pane up to i";
 * a pane is released once every partition has closed it, as the merge of its partials.
 *
 * Noise: every draw has an id; a draw is seen by the adversary once a record carrying it is
 * written to results.aggregates, committed or aborted. The stage's own state is sealed (the
 * adversary cannot read it).
 *
 * Configurations (spin -D...): none = store the noisy record sealed before publishing it
 *   (the version-1 stage's order), partials chained to their partition's previous partial;
 *   SPEC_READBACK  the stage publishes the noisy record and its state in one transaction and
 *                  learns after a restart what it released by reading back
 *                  results.aggregates (read_committed)                     (finding F7)
 *   SPEC_UNCHAINED partials carry no link to their partition's previous partial (finding F8)
 *   M_NO_DEDUP     mutant: a partial seen twice is applied twice (checked with
 *                  SPEC_UNCHAINED ADV_REPLAY: the chain refuses a replay too)
 *   ADV_REPLAY     the adversary only replays partials
 */

#ifndef ADV
#define ADV 1
#endif
#ifndef CRASH
#define CRASH 1
#endif

#define NP 2
#define NPANE 2
#define NONE 255

/* ------------------------------------------------------------------ vault.partials */
#define PLN 5
byte pp[PLN]; byte pn[PLN]; byte pv[PLN];   /* partition, pane, its previous pane */
byte plen = 3;

/* ------------------------------------------------------------------ results.aggregates */
#define RLN 5
byte rpane[RLN]; byte rdraw[RLN]; byte rst[RLN];
byte rlen;
#define OPEN 1
#define COMMITTED 2
#define ABORTED 3

/* ------------------------------------------------------------------ the stage */
/* working state and its last durable (sealed, committed) copy */
#define RC(p, i) (2 * (p) + (i))   /* partials received: counts per (partition, pane) */
#define FR(p)    (4 + (p))         /* last pane received from p, + 1 (0: none) */
#define NEXT     6                 /* next pane to release */
#define OBP      7                 /* outbox: pane (NONE: empty) */
#define OBD      8                 /* ... and its draw */
#define RD       9                 /* next offset of vault.partials to read */
#define NS       10
byte W[NS]; byte D[NS];
bit  tx;                           /* a publishing transaction is open */
byte crashes;
byte draws;                        /* noise draws so far (their ids) */
byte seen[NPANE];                  /* ghost: draws of the pane the adversary has seen (bits) */
byte rel[NPANE];                   /* ghost: committed releases of the pane */
byte adv = ADV;
byte racts = ADV;                  /* adv when the stage last read vault.partials again */

hidden byte i, x, o, ok;
hidden byte noise_drawn_once_per_pane, pane_has_every_partial, every_pane_released;

inline save() {
  i = 0;
  do :: i < NS -> D[i] = W[i]; i++ :: else -> break od; i = 0
}
inline load() {
  i = 0;
  do :: i < NS -> W[i] = D[i]; i++ :: else -> break od; i = 0
}

/* apply a partial (p, n, prev) (ReleaseCore.receive / PaneCombiner.add) */
inline receive(p, n, prev) {
  ok = 1;
  if :: n < W[NEXT] -> ok = 0 :: else -> skip fi;               /* stale: pane released */
#ifndef M_NO_DEDUP
  if :: W[RC(p, n)] > 0 -> ok = 0 :: else -> skip fi;           /* seen twice: once */
#endif
#ifndef SPEC_UNCHAINED
  if :: ok && prev != (W[FR(p)] == 0 -> NONE : W[FR(p)] - 1) -> ok = 0   /* a partial missing */
     :: else -> skip fi;
#endif
  if
  :: ok -> W[RC(p, n)]++;
           if :: n + 1 > W[FR(p)] -> W[FR(p)] = n + 1 :: else -> skip fi;
           printf("stage: takes the partial of p%d pane %d\n", p, n)
  :: else -> printf("stage: drops a partial of p%d pane %d\n", p, n)
  fi
}

/* the release stage */
proctype Stage() {
end:
  do
  /* read the next partial */
  :: atomic { W[RD] < plen && !tx ->
       x = W[RD]; W[RD]++; receive(pp[x], pn[x], pv[x]); x = 0; ok = 0 }
  /* waiting for a pane with everything read: read vault.partials again from the start
     (once after each interference, and after a restart; the stage does so on a timer) */
  :: atomic { W[RD] == plen && !tx && W[NEXT] < NPANE && racts != adv ->
       W[RD] = 0; racts = adv; printf("stage: reads vault.partials again\n") }
  /* a pane every partition has closed: draw its noise */
  :: atomic { !tx && W[OBP] == NONE && W[NEXT] < NPANE && W[FR(0)] > W[NEXT] &&
              W[FR(1)] > W[NEXT] ->
       pane_has_every_partial = (W[NEXT] == 0 -> W[RC(0, 0)] == 1 :
                                 W[RC(0, 1)] == 1 && W[RC(1, 1)] == 1);
       assert(pane_has_every_partial);
       draws++; W[OBP] = W[NEXT]; W[OBD] = draws; W[NEXT]++;
       printf("stage: draws noise %d for pane %d\n", draws, W[OBP]);
#ifndef SPEC_READBACK
       save();                                        /* stored before it is published */
       printf("stage: stores it (sealed)\n");
#endif
       skip }
  /* publish the outbox in a transaction (with the stage's state, SPEC_READBACK) */
  :: atomic { !tx && W[OBP] != NONE && rlen < RLN ->
       rpane[rlen] = W[OBP]; rdraw[rlen] = W[OBD]; rst[rlen] = OPEN; rlen++; tx = 1;
       seen[W[OBP]] = seen[W[OBP]] | (1 << W[OBD]);   /* the adversary reads open records */
       noise_drawn_once_per_pane = (seen[W[OBP]] == 2 || seen[W[OBP]] == 4 ||
                                    seen[W[OBP]] == 8 || seen[W[OBP]] == 16);
       assert(noise_drawn_once_per_pane);
       printf("stage: publishes pane %d (draw %d)\n", W[OBP], W[OBD]) }
  :: atomic { tx ->
       rst[rlen - 1] = COMMITTED; tx = 0; rel[rpane[rlen - 1]]++;
       W[OBP] = NONE; W[OBD] = 0;
       save();
       printf("stage: commits\n") }
  /* crash: an open transaction aborts; restart from the sealed state */
  :: atomic { crashes < CRASH ->
       crashes++;
       if :: tx -> rst[rlen - 1] = ABORTED; tx = 0 :: else -> skip fi;
       load(); racts = 255;
#ifdef SPEC_READBACK
       /* read back what was released (committed records only) */
       i = 0;
       do
       :: i < rlen -> if :: rst[i] == COMMITTED && rpane[i] + 1 > W[NEXT] -> W[NEXT] = rpane[i] + 1
                         :: else -> skip fi; i++
       :: else -> break
       od; i = 0;
#endif
       printf("stage: crashes, restarts from its sealed state\n") }
  od
}

/* the adversary on vault.partials: replay (a copy appended), reorder (a later partial
   served ahead), drop (the stage's fetch skips one) */
proctype Adversary() {
end:
  do
  :: atomic { adv > 0 && plen < PLN ->
       adv--; select (x : 0 .. plen - 1);
       pp[plen] = pp[x]; pn[plen] = pn[x]; pv[plen] = pv[x]; plen++;
       printf("adversary: replays partial @%d\n", x); x = 0 }
#ifndef ADV_REPLAY
  :: atomic { adv > 0 && W[RD] < plen - 1 && !tx ->
       adv--; select (x : W[RD] + 1 .. plen - 1);
       printf("adversary: serves partial @%d early\n", x);
       receive(pp[x], pn[x], pv[x]); x = 0; ok = 0 }
  :: atomic { adv > 0 && W[RD] < plen ->
       adv--; printf("adversary: drops partial @%d from the fetch\n", W[RD]); W[RD]++ }
#endif
  od
}

init {
  atomic {
    pp[0] = 0; pn[0] = 0; pv[0] = NONE;
    pp[1] = 1; pn[1] = 1; pv[1] = NONE;
    pp[2] = 0; pn[2] = 1; pv[2] = 0;
    W[OBP] = NONE; D[OBP] = NONE;
    run Stage(); run Adversary()
  }
  timeout -> every_pane_released = (rel[0] >= 1 && rel[1] >= 1);
  assert(every_pane_released)
}
