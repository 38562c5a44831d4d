// Handlers of COPY FROM STDIN's messages (CopyData, CopyDone, CopyFail) and of the refused fastpath FunctionCall,
// on a client holding an origin connection. (Without one, Copy messages are ignored, as Postgres does.)
import { encodeReadyForQuery, errorMessage } from "../../protocol/backend.ts";
import { K } from "../server/expect.ts";
import type { Server } from "../server/server.ts";
import { toOrigin } from "./client.ts";
import type { Client } from "./state.ts";

export const FUNCTION_CALL_REFUSED = errorMessage("0A000", "the fastpath function call protocol is not supported by the pooler; use SELECT");

export function onCopyData(cl: Client, raw: Uint8Array): boolean {
  toOrigin(cl, raw);
  return true;
}

/** CopyDone or CopyFail: the origin's COPY ends. */
export function onCopyEnd(cl: Client, s: Server, raw: Uint8Array): boolean {
  toOrigin(cl, raw);
  s.copyIn = false;
  return true;
}

export function onFunctionCall(cl: Client, s: Server): boolean {
  s.push({ k: K.Synth, bytes: FUNCTION_CALL_REFUSED });
  s.push({ k: K.Synth, bytes: encodeReadyForQuery(String.fromCharCode(cl.status) as "I") });
  return true;
}
