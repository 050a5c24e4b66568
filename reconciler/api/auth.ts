import { createHash, randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";

export type Role = "user" | "admin";

export interface Principal {
  readonly user: string;
  readonly role: Role;
}

/** One entry of the tokens file. Only the token's SHA-256 is stored, so the file is no secret. */
export interface TokenEntry extends Principal {
  readonly tokenSha256: string;
}

/** User names: what the tokens file accepts, so `vmpools token` never prints an entry it would refuse. */
export const USER_NAME_RULE = /^[A-Za-z0-9._@-]{1,64}$/;

/** Why `user` is not a valid user name, or undefined. */
export function userNameProblem(user: string): string | undefined {
  return USER_NAME_RULE.test(user)
    ? undefined
    : `user ${JSON.stringify(user)}: use 1-64 of letters, digits and '._@-' (no spaces or other characters)`;
}

const sha256Hex = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");

/** Bearer-token authentication against a fixed list of users. */
export class TokenAuth {
  /**
   * Principals by their token's SHA-256 (hex). A lookup by digest instead of comparing against
   * every entry in constant time: what its timing can tell is how a SHA-256 of the guess matches
   * stored digests, which says nothing useful about any token (a preimage would be needed). The
   * constant-time scan cost ~0.1 ms per request at 1000 entries, 100 ms of a 1000-take burst.
   */
  private readonly byDigest = new Map<string, Principal>();

  constructor(entries: readonly TokenEntry[]) {
    entries.forEach((e, i) => {
      const problem = userNameProblem(e.user);
      if (problem) throw new Error(`tokens[${i}].${problem}`);
      if (e.role !== "user" && e.role !== "admin") throw new Error(`tokens[${i}].role must be "user" or "admin"`);
      if (!/^[0-9a-f]{64}$/.test(e.tokenSha256))
        throw new Error(`tokens[${i}].tokenSha256 must be 64 hex digits (see: vmpools token)`);
      // One token for two entries would let whichever comes last decide who its bearer is.
      const earlier = this.byDigest.get(e.tokenSha256);
      if (earlier) {
        const j = entries.findIndex((o) => o.tokenSha256 === e.tokenSha256);
        throw new Error(
          `tokens[${i}] (${e.user}) has the same tokenSha256 as tokens[${j}] (${earlier.user}): give each entry a token of its own (vmpools token)`,
        );
      }
      this.byDigest.set(e.tokenSha256, { user: e.user, role: e.role });
    });
  }

  /** Reads `{ "tokens": [{ "user", "role", "tokenSha256" }] }`. */
  static fromFile(path: string): TokenAuth {
    let parsed: { tokens?: TokenEntry[] };
    // Whoever can write the file can make themselves an admin.
    const st = statSync(path, { throwIfNoEntry: false });
    if (st && (st.mode & 0o022) !== 0) {
      throw new Error(
        `tokens file ${path} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}), so anyone could add an admin: run chmod go-w ${path}`,
      );
    }
    const uid = process.getuid?.();
    if (st && uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw new Error(`tokens file ${path} belongs to uid ${st.uid}, not to this user (${uid}) or root: chown it`);
    }
    try {
      parsed = JSON.parse(readFileSync(path, "utf8"));
    } catch (e) {
      throw new Error(`cannot read tokens file ${path}: ${(e as Error).message}`);
    }
    if (!Array.isArray(parsed.tokens)) throw new Error(`tokens file ${path} needs a "tokens" list`);
    return new TokenAuth(parsed.tokens);
  }

  /** The principal for an `Authorization` header value, or undefined. */
  authenticate(header: string | undefined): Principal | undefined {
    // The scheme is case-insensitive (RFC 9110 11.1); the token is not.
    const m = /^Bearer ([A-Za-z0-9._~+/=-]{16,256})$/i.exec(header ?? "");
    if (!m) return undefined;
    return this.byDigest.get(sha256Hex(m[1]!));
  }
}

/** A new random token and the tokens-file entry that admits it. */
export function newToken(user: string, role: Role): { token: string; entry: TokenEntry } {
  const problem = userNameProblem(user);
  if (problem) throw new Error(problem);
  const token = randomBytes(24).toString("base64url");
  return { token, entry: { user, role, tokenSha256: sha256Hex(token) } };
}
