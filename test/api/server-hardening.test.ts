// Issue 9, D14 (part): what the API tells a client when it refuses, and what it keeps to itself.
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { TokenAuth, newToken } from "../../reconciler/api/auth";
import { createApiServer } from "../../reconciler/api/server";
import type { Reconciler } from "../../reconciler/reconciler";

const alice = newToken("alice", "user");
let server: Server;
let url: string;
let logged: unknown[][] = [];

beforeAll(async () => {
  // The status call fails the way a driver error would: with a command line and a temp path.
  const failing = {
    status: () => {
      throw new Error("virsh -c qemu:///system vol-download --file /tmp/vmpools-xyz/secret.iso failed");
    },
  } as unknown as Reconciler;
  server = createApiServer(failing, new TokenAuth([alice.entry]));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  logged = [];
  jest.spyOn(console, "error").mockImplementation((...args: unknown[]) => void logged.push(args));
});
afterEach(() => jest.restoreAllMocks());

test("a 500 names no command line or path; the server's log has them", async () => {
  const res = await fetch(`${url}/v1/status`, { headers: { authorization: `Bearer ${alice.token}` } });
  expect(res.status).toBe(500);
  const body = await res.text();
  expect(body).not.toContain("virsh");
  expect(body).not.toContain("/tmp/");
  expect(JSON.parse(body)).toEqual({ error: "internal", message: "internal error; the server's log has the details" });
  expect(String(logged.flat().map((x) => (x instanceof Error ? x.message : x)))).toContain("vol-download");
});

test("a 405 says which method the endpoint takes, in Allow", async () => {
  const res = await fetch(`${url}/v1/status`, { method: "POST", headers: { authorization: `Bearer ${alice.token}` } });
  expect(res.status).toBe(405);
  expect(res.headers.get("allow")).toBe("GET");
});

test("the Bearer scheme is matched in any case, the token exactly", async () => {
  const auth = new TokenAuth([alice.entry]);
  expect(auth.authenticate(`bearer ${alice.token}`)).toEqual({ user: "alice", role: "user" });
  expect(auth.authenticate(`BEARER ${alice.token}`)).toEqual({ user: "alice", role: "user" });
  expect(auth.authenticate(`Bearer ${alice.token.toUpperCase()}`)).toBeUndefined();
});

test("two tokens-file entries with one token are refused, naming both", () => {
  const bob = { ...alice.entry, user: "bob", role: "admin" as const };
  expect(() => new TokenAuth([alice.entry, bob])).toThrow(
    /tokens\[1\] \(bob\) has the same tokenSha256 as tokens\[0\] \(alice\): give each entry a token of its own/,
  );
});
