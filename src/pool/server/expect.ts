// What an origin connection owes, in order: every message sent to it that produces a response pushes an Expect
// entry, and its responses pop them (server.ts). The kinds, the entry, and the entries shared because they carry no data.
import type { Op } from "../session.ts";

export const enum K {
  Parse,
  ParseHidden,
  Bind,
  Describe,
  Execute,
  Close,
  CloseHidden,
  Synth,
  Sync,
  Query,
  Replay,
  /** A Describe the client did not send: its RowDescription (or NoData) goes to owner.hiddenAnswer, not the client. */
  DescribeHidden,
}

export interface Expect {
  k: K;
  /** Server-side statement name of a Parse/Bind (to forget it when the Parse fails). */
  name?: string;
  /** The client's own name of a statement it Parsed (to forget it when the origin rejects or skips the Parse). */
  client?: string;
  /** Bytes to emit for a Synth entry. */
  bytes?: Uint8Array;
  /**
   * Replay: called with the origin's error fields, or null when it succeeded. Synth: called with null when its
   * place in the answer is reached (after what the origin owed before it), with SKIPPED when an error skipped it.
   */
  done?: (error: Uint8Array | null) => void;
  error?: Uint8Array;
  /** performance.now() when sent, for latency. */
  t?: number;
  /** A Sync whose ReadyForQuery the client must not see (it ends an attempt that is being re-sent). */
  swallow?: boolean;
  /** Query or Execute: the statements' session effects (session.ts), settled when they complete. */
  ops?: Op[];
  /** Query with ops: statements completed so far, and whether one failed (the rest were skipped). */
  cc?: number;
  failed?: boolean;
}

/** What a skipped Synth entry's `done` gets. */
export const SKIPPED = new Uint8Array(0);

// Expectations without per-message data are shared: the relay only reads them.
export const EXPECT_PARSE: Expect = { k: K.Parse };
export const EXPECT_BIND: Expect = { k: K.Bind };
export const EXPECT_DESCRIBE: Expect = { k: K.Describe };
export const EXPECT_DESCRIBE_HIDDEN: Expect = { k: K.DescribeHidden };
export const EXPECT_EXECUTE: Expect = { k: K.Execute };
export const EXPECT_CLOSE: Expect = { k: K.Close };
export const EXPECT_CLOSE_HIDDEN: Expect = { k: K.CloseHidden };

