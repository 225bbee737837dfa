/*
 * procvault protocol v2, model 1 of 4: producer sessions, the partition engine's replay guard
 * and merge, vault restarts, epochs and rotation, against an adversary who holds Kafka.
 *
 * One partition; two organizations A and B, one agent (producer) each:
 *   A sends e0 (key 1) and e2 (key 3, the case's end marker), B sends e1 (key 2); one case.
 *   The merge must apply e0, e1, e2 in that order, each exactly once, and complete the case.
 *
 * Kafka: each organization's topic partition is an append-only log of records with a
 * transaction status (OPEN, COMMITTED, ABORTED); a read_committed reader stops at an OPEN
 * record (the last stable offset) and skips ABORTED ones. agent.progress is a log per
 * organization. The vault's state and offsets commit together (one transaction per batch):
 * the snapshot below; a crash restores it.
 *
 * The adversary (budget ADV actions) is the broker: it sees every record, open and aborted
 * ones included, and can serve the vault a copy of any of them as a committed record at its
 * current position (replay, re-injection of an aborted batch, reordering: a later or still
 * open record served ahead of earlier ones), make the vault's fetch skip the record at its
 * position (drop; the record stays in the log, and a later re-read finds it), and choose which
 * genuine progress record a restarting agent reads (an older one, or one from an aborted
 * transaction). It cannot make a record with a valid header tag: every frame the vault sees
 * was written by an agent (symbolic cryptography).
 *
 * Configurations (spin -D...): none = the protocol with the fixes proposed in docs/formal.md;
 *   SPEC_GUARD    the guard of docs/protocol.md: admit any greater (generation, sequence),
 *                 sequence per session, no link between sessions        (finding F1)
 *   SPEC_RESUME   the agent resumes from the highest valid progress record (finding F2)
 *   SPEC_RETIRE   the old epoch is retired after a grace period, whatever the vault has read
 *                 (finding F3)
 *   M_CASE_GUARD  mutant: the events' replay guard lives in the case and goes with it when the
 *                 case completes (completion forgotten with it, as in version 1)
 *   M_HB_UNGUARDED mutant: heartbeats are not checked against the guard
 *   M_NO_MERGE_KEY mutant: no merge-key guard (an aborted batch re-injected, then re-sent)
 *   M_GEN_PROGRESS mutant: generation = last committed generation + 1 (no wall clock)
 *   M_BUFFER_LOST  mutant: the snapshot keeps the guard of buffered frames but not the buffer
 */


#ifndef ADV
#define ADV 2            /* adversary actions */
#endif
#ifndef VCRASH
#define VCRASH 1         /* vault worker crashes */
#endif
#ifndef ACRASH_A
#define ACRASH_A 1       /* crashes of A's agent */
#endif
#ifndef ACRASH_B
#define ACRASH_B 0       /* crashes of B's agent */
#endif
#define ACRASH(o) ((o) == A -> ACRASH_A : ACRASH_B)
#ifndef ROTATE
#define ROTATE 1         /* 1: the vault rotates to epoch 2 once */
#endif

#define NORG 2
#define A 0
#define B 1
#define NEV 3
#define KEY(e)   ((e) + 1)                 /* merge key (timestamp, order) of event e */
#define ENDEV 2                            /* e2 is the case's end-of-case marker */
#define NSRC(o)  ((o) == A -> 2 : 1)       /* the organization's source */
#define SRC(o, i) ((o) == A -> ((i) == 0 -> 0 : 2) : 1)
#define CLOSEDK 9                          /* promise of a closed heartbeat */

/* ------------------------------------------------------------------ Kafka: event topics */
#define L 8
#define LI(o, i) ((o) * L + (i))
#define EV 1
#define HB 2
#define OPEN 1
#define COMMITTED 2
#define ABORTED 3
byte lk[NORG * L];   /* kind */
byte lgn[NORG * L];  /* generation (session) */
byte lsq[NORG * L];  /* sequence in the session (in this partition) */
byte lv[NORG * L];   /* EV: event id; HB: promise key (CLOSEDK = closed) */
byte lpv[NORG * L];  /* first record of a session: PV of the producer's last committed record */
byte lst[NORG * L];  /* transaction status */
byte llen[NORG];
#define PV(g, s) ((g) * 16 + (s) + 1)      /* (generation, sequence) as one ordered number */

/* the epoch of each session */
#define GMAX 6
byte sep[NORG * GMAX];
byte cur_ep = 1;     /* newest announced epoch */
byte min_ep = 1;     /* oldest epoch the vault still accepts */

/* ------------------------------------------------------------------ agent.progress */
#define PL 5
byte ppos[NORG * PL]; byte pgen[NORG * PL]; byte ppv[NORG * PL]; byte pst[NORG * PL];
byte plen[NORG];

/* ------------------------------------------------------------------ agents */
bit  a_sess[NORG];   /* a producer session is open */
bit  a_tx[NORG];     /* a transaction is open */
bit  a_done[NORG];
byte a_gen[NORG];    /* session generation */
byte a_seq[NORG];    /* next sequence */
byte a_pos[NORG];    /* next source position */
byte a_nb[NORG];     /* events in the open batch */
byte a_clk[NORG];    /* the agent's clock: strictly greater at every session */
byte a_crash[NORG];
byte a_prev[NORG];   /* PV of the last committed record, as the agent knows it */
byte lf_pos[NORG];   /* local state file: committed position */
byte lf_pv[NORG];    /* ... and PV of the last committed record */

/* ------------------------------------------------------------------ vault */
#define G(o)    (o)          /* guard: generation of the last admitted frame */
#define SQ(o)   (2 + (o))    /* ... its sequence */
#define MK(o)   (4 + (o))    /* ... merge key of the last admitted EVENT */
#define SK(o)   (6 + (o))    /* source key: how far the organization has come (merge) */
#define CL(o)   (8 + (o))    /* closed */
#define HS(o)   (10 + (o))   /* first heartbeat seen */
#define PEND(e) (12 + (e))   /* buffered in the merge */
#define APP(e)  (15 + (e))   /* applied */
#define DONE    18           /* the case completed */
#define LASTK   19           /* merge key of the last applied event */
#define LA(o)   (20 + (o))   /* offset after the last admitted frame */
#define RD(o)   (22 + (o))   /* next offset to read */
#define CG(o)   (24 + (o))   /* M_CASE_GUARD: the case's guard */
#define CM(o)   (26 + (o))
#define CGONE   28           /* M_CASE_GUARD: the case record was deleted at completion */
#define NV 29
byte W[NV];                  /* the worker's state */
byte S[NV];                  /* the last committed snapshot (state and offsets) */
byte v_crash;
byte dur[NEV];               /* ghost: committed transactions that applied the event */
bit  intx[NEV];              /* ghost: applied in the open transaction */
bit  dirty;
byte adv = ADV;
byte racts[NORG];            /* adv when the vault last read the organization again */

/* scratch variables of the atomic steps (never carried from one step to the next) */
hidden byte i, j, n, pick, x, g, s, e, e2, fr, verdict, o2;
/* the properties' names, for readable counterexamples */
hidden byte applied_at_most_once, in_merge_order, committed_at_most_once;
hidden byte every_event_applied_once_and_case_completed;

#define PVW(o) (W[G(o)] == 0 -> 0 : PV(W[G(o)], W[SQ(o)]))

/* ------------------------------------------------------------------ properties */
/* every sent event applied exactly once in committed state, the case completed */
#define ALLDONE (a_done[A] && a_done[B] && dur[0] == 1 && dur[1] == 1 && dur[2] == 1 && S[DONE])
ltl live { <> [] ALLDONE }
ltl once { [] (dur[0] <= 1 && dur[1] <= 1 && dur[2] <= 1) }

inline save_state() {
  i = 0;
  do :: i < NV -> S[i] = W[i]; i++
     :: else -> break
  od
}

inline restore_state() {
  i = 0;
  do :: i < NV -> W[i] = S[i]; i++
     :: else -> break
  od
}

/* -------------------------------------------------------------- the partition engine */
/* apply event e (PartitionEngine.step, in merge order) */
inline apply(e) {
  if
  :: W[DONE] -> printf("vault:   e%d after_completion\n", e) /* contributes nothing */
  :: else ->
     applied_at_most_once = (W[APP(e)] == 0); assert(applied_at_most_once);
     /* in merge order, hence in its organization's order */
     in_merge_order = (KEY(e) > W[LASTK]); assert(in_merge_order);
     W[APP(e)] = 1; intx[e] = 1; W[LASTK] = KEY(e);
     printf("vault:   applies e%d\n", e);
     if
     :: e == ENDEV ->
        W[DONE] = 1;
#ifdef M_CASE_GUARD
        W[CGONE] = 1;                                 /* the case record goes, guard and all */
#endif
        skip
     :: else -> skip
     fi
  fi
}

/* release every buffered event the frontier lets through (and, all closed, flush) */
inline merge() {
  do
  :: true ->
     fr = CLOSEDK;
     o2 = 0;
     do
     :: o2 < NORG ->
        if
        :: !W[HS(o2)] -> fr = 0                        /* wait for every first heartbeat */
        :: W[HS(o2)] && !W[CL(o2)] && W[SK(o2)] < fr -> fr = W[SK(o2)]
        :: else -> skip
        fi;
        o2++
     :: else -> break
     od;
     e2 = 0;
     do
     :: e2 < NEV && W[PEND(e2)] == 0 -> e2++
     :: else -> break
     od;
     if
     :: e2 < NEV && KEY(e2) <= fr -> W[PEND(e2)]--; apply(e2)
     :: else -> break
     fi
  od;
  if
  :: W[CL(A)] && W[CL(B)] && !W[DONE] && W[PEND(0)] + W[PEND(1)] + W[PEND(2)] == 0 ->
     W[DONE] = 1;                                      /* flush: every stream closed */
     printf("vault:   every stream closed: the case completes\n")
  :: else -> skip
  fi
}

/* admit a committed frame of organization o (PartitionEngine.admit): the record at log
   index x; at is the offset after it (the resume offset once it is admitted) */
inline admit(o, x, at) {
  /* verdict: 1 admit, 2 replay, 3 gap (held back), 4 unknown epoch, 5 unguarded */
  g = lgn[x]; s = lsq[x];
  if
  :: sep[o * GMAX + g] < min_ep -> verdict = 4
  :: else ->
#ifdef SPEC_GUARD
     if
     :: PV(g, s) > PVW(o) -> verdict = 1
     :: else -> verdict = 2
     fi
#else
     if
     :: W[G(o)] == 0 || g > W[G(o)] ->
        if
        :: s == 0 && lpv[x] <= PVW(o) -> verdict = 1
        :: else -> verdict = 3
        fi
     :: g == W[G(o)] && s == W[SQ(o)] + 1 -> verdict = 1
     :: g == W[G(o)] && s > W[SQ(o)] + 1 -> verdict = 3
     :: else -> verdict = 2
     fi
#endif
  fi;
#ifdef M_CASE_GUARD
  /* events: the case's guard decides (a completed case's record is gone); the producer's
     sequence still moves, for the heartbeats */
  if
  :: lk[x] == EV && verdict != 4 ->
     if
     :: W[CGONE] -> W[CG(A)] = 0; W[CG(B)] = 0; W[CM(A)] = 0; W[CM(B)] = 0;
                    W[CGONE] = 0; W[DONE] = 0
     :: else -> skip
     fi;
     if
     :: PV(g, s) > W[CG(o)] && KEY(lv[x]) > W[CM(o)] ->
        W[CG(o)] = PV(g, s); W[CM(o)] = KEY(lv[x]); verdict = 1
     :: else -> verdict = 2
     fi
  :: else -> skip
  fi;
#endif
#ifdef M_HB_UNGUARDED
  if
  :: lk[x] == HB && verdict != 4 && verdict != 1 -> verdict = 5
  :: else -> skip
  fi;
#endif
  if
  :: verdict == 1 ->
     if
     :: PV(g, s) > PVW(o) -> W[G(o)] = g; W[SQ(o)] = s
     :: else -> skip
     fi;
     W[LA(o)] = (at != 0 -> at : W[RD(o)]); dirty = 1
  :: verdict == 5 -> dirty = 1
  :: else -> skip
  fi;
  if
  :: verdict == 1 && lk[x] == EV ->
     e = lv[x];
#if !defined(M_NO_MERGE_KEY) && !defined(M_CASE_GUARD)
     if
     :: KEY(e) > W[MK(o)] ->
#endif
        W[MK(o)] = KEY(e); W[PEND(e)]++;
        if :: KEY(e) > W[SK(o)] -> W[SK(o)] = KEY(e) :: else -> skip fi;
        W[CL(o)] = 0
#if !defined(M_NO_MERGE_KEY) && !defined(M_CASE_GUARD)
     :: else -> skip                                   /* a resent event: refused */
     fi
#endif
  :: (verdict == 1 || verdict == 5) && lk[x] == HB ->
     W[HS(o)] = 1;
     if :: lv[x] > W[SK(o)] -> W[SK(o)] = lv[x] :: else -> skip fi;
     W[CL(o)] = (lv[x] == CLOSEDK)
  :: else -> skip                                     /* refused, or held back (3) */
  fi;
  printf("vault:   %c gen %d seq %d kind %d -> %d \n",
         'A' + o, g, s, lk[x], verdict);
  merge()
}

/* ------------------------------------------------------------------ processes */
inline abort_tx(o) {
  a_crash[o]++;
  i = 0;
  do
  :: i < llen[o] -> if :: lst[LI(o, i)] == OPEN -> lst[LI(o, i)] = ABORTED
                      :: else -> skip fi; i++
  :: else -> break
  od;
  i = 0;
  do
  :: i < plen[o] -> if :: pst[o * PL + i] == OPEN -> pst[o * PL + i] = ABORTED
                       :: else -> skip fi; i++
  :: else -> break
  od;
  a_tx[o] = 0; a_sess[o] = 0; i = 0
}

inline commit_tx(o) {
  i = 0;
  do
  :: i < llen[o] -> if :: lst[LI(o, i)] == OPEN -> lst[LI(o, i)] = COMMITTED
                      :: else -> skip fi; i++
  :: else -> break
  od;
  pst[o * PL + plen[o] - 1] = COMMITTED;
  a_tx[o] = 0; i = 0
}

/* an organization's agent (procvault.organization.agent.Agent) */
/* done: what no longer matters is forgotten (fewer states) */
inline finish(o) {
  a_done[o] = 1; a_sess[o] = 0; a_gen[o] = 0; a_seq[o] = 0; a_pos[o] = 0; a_clk[o] = 0;
  a_crash[o] = 0; a_prev[o] = 0; lf_pos[o] = 0; lf_pv[o] = 0
}

proctype Agent(byte o) {
end:
  do
  /* start a producer session (at start, after a crash, after a rotation) */
  :: atomic { !a_sess[o] && !a_done[o] ->
       a_clk[o]++;
       a_pos[o] = lf_pos[o]; a_prev[o] = lf_pv[o];   /* the local state file */
#if defined(SPEC_RESUME) || defined(M_GEN_PROGRESS)
       /* the progress record it reads: the latest committed one, or (the adversary) any
          genuine one, older or aborted */
       pick = 255;
       i = 0;
       do
       :: i < plen[o] -> if :: pst[o * PL + i] == COMMITTED -> pick = i :: else -> skip fi; i++
       :: else -> break
       od;
       if
       :: true
       :: adv > 0 && plen[o] > 0 ->
          select (i : 0 .. plen[o] - 1);
          if :: i != pick -> pick = i; adv--;
                printf("adversary: shows agent %c progress record %d\n", 'A' + o, i)
             :: else -> skip fi
       fi;
#endif
#ifdef SPEC_RESUME
       if                                            /* ... or the highest valid record */
       :: pick != 255 && ppos[o * PL + pick] > a_pos[o] ->
          a_pos[o] = ppos[o * PL + pick]; a_prev[o] = ppv[o * PL + pick]
       :: else -> skip
       fi;
#endif
#ifdef M_GEN_PROGRESS
       if :: pick != 255 -> a_gen[o] = pgen[o * PL + pick] + 1 :: else -> a_gen[o] = 1 fi;
#else
       a_gen[o] = a_clk[o];                          /* max(committed + 1, wall clock) */
#endif
       printf("agent %c: session gen %d epoch %d from position %d\n", 'A' + o, a_gen[o],
              cur_ep, a_pos[o]);
       if
       :: a_pos[o] >= NSRC(o) -> finish(o); printf("agent %c: nothing left to send\n", 'A' + o)
       :: else -> a_sess[o] = 1; a_seq[o] = 0; sep[o * GMAX + a_gen[o]] = cur_ep
       fi;
       pick = 0; i = 0 }
  /* one batch in one transaction: n events, a heartbeat (closed at the end of the source)
     and the progress record, written but not yet committed */
  :: atomic { a_sess[o] && !a_tx[o] && a_pos[o] < NSRC(o) && plen[o] < PL ->
       if
       :: n = 1
       :: a_pos[o] + 1 < NSRC(o) -> n = NSRC(o) - a_pos[o]
       fi;
       do
       :: n > 0 ->
          i = LI(o, llen[o]);
          lk[i] = EV; lgn[i] = a_gen[o]; lsq[i] = a_seq[o]; lv[i] = SRC(o, a_pos[o]);
          lpv[i] = (a_seq[o] == 0 -> a_prev[o] : 0); lst[i] = OPEN;
          llen[o]++; a_seq[o]++; a_pos[o]++; n--
       :: else -> break
       od;
       i = LI(o, llen[o]);
       lk[i] = HB; lgn[i] = a_gen[o]; lsq[i] = a_seq[o];
       lv[i] = (a_pos[o] == NSRC(o) -> CLOSEDK : KEY(SRC(o, a_pos[o] - 1)));
       lpv[i] = 0; lst[i] = OPEN;
       llen[o]++; a_seq[o]++;
       j = o * PL + plen[o];
       ppos[j] = a_pos[o]; pgen[j] = a_gen[o]; ppv[j] = PV(a_gen[o], a_seq[o] - 1);
       pst[j] = OPEN; plen[o]++;
       printf("agent %c: writes a batch up to position %d, seq %d (open)\n", 'A' + o,
              a_pos[o], a_seq[o] - 1);
       a_tx[o] = 1; i = 0; j = 0 }
  /* commit (the local state file is written after the commit returns) */
  :: atomic { a_tx[o] ->
       commit_tx(o);
       lf_pos[o] = a_pos[o]; lf_pv[o] = PV(a_gen[o], a_seq[o] - 1); a_prev[o] = lf_pv[o];
       printf("agent %c: commits\n", 'A' + o);
       if :: a_pos[o] == NSRC(o) -> finish(o) :: else -> skip fi }
  /* ... or a crash after the commit, before the local state file is written */
  :: atomic { a_tx[o] && a_crash[o] < ACRASH(o) -> commit_tx(o); a_crash[o]++; a_sess[o] = 0;
       printf("agent %c: commits, crashes before its state file\n", 'A' + o) }
  /* ... or a crash before the commit: the transaction is aborted */
  :: atomic { a_tx[o] && a_crash[o] < ACRASH(o) -> abort_tx(o);
       printf("agent %c: crashes, its transaction aborts\n", 'A' + o) }
  /* rotation: a valid announcement of a newer epoch, seen between batches */
  :: atomic { a_sess[o] && !a_tx[o] && sep[o * GMAX + a_gen[o]] < cur_ep -> a_sess[o] = 0;
       printf("agent %c: sees epoch %d announced, closes its session\n", 'A' + o, cur_ep) }
  od
}

#define READABLE(o) (W[RD(o)] < llen[o] && lst[LI(o, W[RD(o)])] != OPEN)

/* read the record at the vault's position of organization o */
inline fetch(o) {
  do                                                   /* aborted records: skipped */
  :: W[RD(o)] < llen[o] && lst[LI(o, W[RD(o)])] == ABORTED -> W[RD(o)]++
  :: else -> break
  od;
  if
  :: W[RD(o)] < llen[o] && lst[LI(o, W[RD(o)])] == COMMITTED ->
     x = LI(o, W[RD(o)]);
     printf("vault: reads %c@%d\n", 'A' + o, W[RD(o)]);
     W[RD(o)]++;
     admit(o, x, W[RD(o)])
  :: else -> skip
  fi
}

/* a vault worker (streams/vault_worker.py VaultWorker) hosting the partition's engine */
proctype Vault() {
end:
  do
  /* fetch the next record (read_committed: it stops at an open transaction) */
  :: atomic { READABLE(A) -> fetch(A); x = 0 }
  :: atomic { READABLE(B) -> fetch(B); x = 0 }
#ifndef SPEC_GUARD
  /* a source the merge waits for has nothing readable: read it again from the start of
     its log (offsets are the broker's word, so a resume offset can be past a frame it never
     delivered). The worker does so on a timer while the source holds the merge back; the
     model does it once after each interference and after a restart, which is all a timer
     can achieve. */
  :: atomic { W[RD(A)] != 0 && !READABLE(A) && !W[CL(A)] && racts[A] != adv ->
       W[RD(A)] = 0; racts[A] = adv;
       printf("vault: A stalls, reads it again from the start\n") }
  :: atomic { W[RD(B)] != 0 && !READABLE(B) && !W[CL(B)] && racts[B] != adv ->
       W[RD(B)] = 0; racts[B] = adv;
       printf("vault: B stalls, reads it again from the start\n") }
#endif
  /* commit the batch: state, outputs and offsets in one transaction */
#ifdef COMMIT_ANY
  :: atomic { dirty ->
#else
  :: atomic { dirty && !READABLE(A) && !READABLE(B) ->     /* a batch ends when the fetch is empty */
#endif
       save_state();
#ifndef SPEC_GUARD
       S[RD(A)] = S[LA(A)]; S[RD(B)] = S[LA(B)];      /* resume after the last admitted frame */
#endif
#ifdef M_BUFFER_LOST
       S[PEND(0)] = 0; S[PEND(1)] = 0; S[PEND(2)] = 0;
#endif
       i = 0;
       do
       :: i < NEV -> dur[i] = dur[i] + intx[i]; intx[i] = 0; i++
       :: else -> break
       od;
       i = 0;
       committed_at_most_once = (dur[0] <= 1 && dur[1] <= 1 && dur[2] <= 1);
       assert(committed_at_most_once);
       printf("vault: commits (applied e0 %d e1 %d e2 %d, case done %d)\n", S[APP(0)],
              S[APP(1)], S[APP(2)], S[DONE]);
       dirty = 0 }
  /* crash: what was not committed is lost; restore the snapshot, read from its offsets */
  :: atomic { dirty && v_crash < VCRASH ->
       v_crash++;
       restore_state(); i = 0;
       intx[0] = 0; intx[1] = 0; intx[2] = 0; dirty = 0;
       racts[A] = 255; racts[B] = 255;
       printf("vault: crashes, restores its last commit\n") }
#if ROTATE
  /* rotation: the vault announces epoch 2 ... */
  :: atomic { cur_ep == 1 && !(a_done[A] && a_done[B]) -> cur_ep = 2;
       printf("vault: announces epoch 2\n") }
  /* ... and retires epoch 1 */
#ifdef SPEC_RETIRE
  /* after a grace period: every agent has moved to the new epoch (or finished) */
  :: atomic { cur_ep == 2 && min_ep == 1 &&
              (a_done[A] || (a_sess[A] && sep[A * GMAX + a_gen[A]] == 2)) &&
              (a_done[B] || (a_sess[B] && sep[B * GMAX + a_gen[B]] == 2)) -> min_ep = 2;
       printf("vault: retires epoch 1\n") }
#else
  /* only once its committed state has every producer in a newer session, or closed */
  :: atomic { cur_ep == 2 && min_ep == 1 &&
              (S[CL(A)] || (S[G(A)] > 0 && sep[A * GMAX + S[G(A)]] == 2)) &&
              (S[CL(B)] || (S[G(B)] > 0 && sep[B * GMAX + S[G(B)]] == 2)) -> min_ep = 2;
       printf("vault: retires epoch 1\n") }
#endif
#endif
  od
}

/* the adversary's actions on the vault's fetches (its choice of progress record is in the
   agent's start) */
proctype Adversary() {
end:
  do
#ifdef ADV_REPLAY
  /* (a weaker adversary: it replays records the vault has already read, nothing else) */
  :: atomic { adv > 0 && W[RD(A)] > 0 ->
       adv--; select (x : 0 .. W[RD(A)] - 1); lst[LI(A, x)] == COMMITTED;
       printf("adversary: replays A@%d\n", x); admit(A, LI(A, x), 0); x = 0 }
  :: atomic { adv > 0 && W[RD(B)] > 0 ->
       adv--; select (x : 0 .. W[RD(B)] - 1); lst[LI(B, x)] == COMMITTED;
       printf("adversary: replays B@%d\n", x); admit(B, LI(B, x), 0); x = 0 }
#else
  /* serve a copy of any record (open, aborted, old, later) as a committed record */
  :: atomic { adv > 0 && llen[A] > 0 ->
       adv--; select (x : 0 .. llen[A] - 1);
       printf("adversary: serves a copy of A@%d\n", x); admit(A, LI(A, x), 0); x = 0 }
  :: atomic { adv > 0 && llen[B] > 0 ->
       adv--; select (x : 0 .. llen[B] - 1);
       printf("adversary: serves a copy of B@%d\n", x); admit(B, LI(B, x), 0); x = 0 }
  /* drop: the vault's fetch skips the record at its position */
  :: atomic { adv > 0 && W[RD(A)] < llen[A] -> adv--;
       printf("adversary: drops A@%d from the fetch\n", W[RD(A)]); W[RD(A)]++ }
  :: atomic { adv > 0 && W[RD(B)] < llen[B] -> adv--;
       printf("adversary: drops B@%d from the fetch\n", W[RD(B)]); W[RD(B)]++ }
#endif
  od
}

init {
  atomic {
    racts[A] = ADV; racts[B] = ADV;
    run Agent(A); run Agent(B); run Vault(); run Adversary()
  }
#ifndef NO_WATCHDOG
  /* every run ends; when nothing can move, everything must have been delivered (the LTL
     property live says the same; spin -DNO_WATCHDOG leaves it to the never claim) */
  timeout -> every_event_applied_once_and_case_completed = ALLDONE;
  assert(every_event_applied_once_and_case_completed)
#endif
}
