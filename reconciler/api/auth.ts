import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
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

const sha256 = (token: string) => createHash("sha256").update(token, "utf8").digest();

/** Bearer-token authentication against a fixed list of users. */
export class TokenAuth {
  private readonly entries: readonly { readonly digest: Buffer; readonly principal: Principal }[];

  constructor(entries: readonly TokenEntry[]) {
    this.entries = entries.map((e, i) => {
      const problem = userNameProblem(e.user);
      if (problem) throw new Error(`tokens[${i}].${problem}`);
      if (e.role !== "user" && e.role !== "admin") throw new Error(`tokens[${i}].role must be "user" or "admin"`);
      if (!/^[0-9a-f]{64}$/.test(e.tokenSha256))
        throw new Error(`tokens[${i}].tokenSha256 must be 64 hex digits (see: vmpools token)`);
      return { digest: Buffer.from(e.tokenSha256, "hex"), principal: { user: e.user, role: e.role } };
    });
    // One token for two entries would let whichever comes last decide who its bearer is.
    this.entries.forEach((e, i) => {
      const j = this.entries.findIndex((o) => o.digest.equals(e.digest));
      if (j !== i) {
        throw new Error(
          `tokens[${i}] (${e.principal.user}) has the same tokenSha256 as tokens[${j}] (${this.entries[j]!.principal.user}): give each entry a token of its own (vmpools token)`,
        );
      }
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

  /** The principal for an `Authorization` header value, or undefined. Compares in constant time. */
  authenticate(header: string | undefined): Principal | undefined {
    // The scheme is case-insensitive (RFC 9110 11.1); the token is not.
    const m = /^Bearer ([A-Za-z0-9._~+/=-]{16,256})$/i.exec(header ?? "");
    if (!m) return undefined;
    const digest = sha256(m[1]!);
    let found: Principal | undefined;
    for (const e of this.entries) if (timingSafeEqual(e.digest, digest)) found = e.principal;
    return found;
  }
}

/** A new random token and the tokens-file entry that admits it. */
export function newToken(user: string, role: Role): { token: string; entry: TokenEntry } {
  const problem = userNameProblem(user);
  if (problem) throw new Error(problem);
  const token = randomBytes(24).toString("base64url");
  return { token, entry: { user, role, tokenSha256: sha256(token).toString("hex") } };
}
