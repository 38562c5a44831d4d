// The pooler client's state machine (src/pool/client/state.ts): the changes move() allows, as PgBouncer's
// change_client_state asserts them. Anything else is a bug that closes the client with XX000.
import { describe, expect, test } from "bun:test";
import { canMove, St, stateName } from "../../src/pool/client/state.ts";

const ALL = [St.Startup, St.Auth, St.Validating, St.Idle, St.Waiting, St.Active, St.Busy, St.Closed];
const ALLOWED: Array<[St, St[]]> = [
  [St.Startup, [St.Auth, St.Closed]],
  [St.Auth, [St.Validating, St.Closed]],
  [St.Validating, [St.Idle, St.Active, St.Closed]],
  [St.Idle, [St.Waiting, St.Busy, St.Closed]],
  [St.Waiting, [St.Active, St.Idle, St.Closed]],
  [St.Active, [St.Idle, St.Closed]],
  [St.Busy, [St.Idle, St.Closed]],
  [St.Closed, []],
];

describe("client state machine", () => {
  for (const [from, to] of ALLOWED) {
    test(`${stateName(from)} moves to ${to.map(stateName).join(", ") || "nothing"}`, () => {
      for (const next of ALL) expect([stateName(from), stateName(next), canMove(from, next)]).toEqual([stateName(from), stateName(next), next === from || to.includes(next)]);
    });
  }

  test("every state but Closed can close; a cache lookup or lane call never holds a connection", () => {
    for (const s of ALL) expect(canMove(s, St.Closed)).toBe(true);
    expect(canMove(St.Busy, St.Active)).toBe(false);
    expect(canMove(St.Active, St.Busy)).toBe(false);
    expect(canMove(St.Waiting, St.Busy)).toBe(false);
  });
});
