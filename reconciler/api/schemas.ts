// Request bodies of the HTTP API, as zod schemas the CLI shares (it checks console options before
// sending them). Every object is strict: a misspelt field is refused, not silently dropped.
import { z } from "zod";
import { CONSOLE_OPTION_NAMES, VV_OPTIONS, type ConsoleOptionName } from "../console";

const shown = (value: unknown) => JSON.stringify(value) ?? String(value);

/** The hint an unknown field gets, in brackets after "unknown field(s)". */
const unknownFields = (hint: string) => (iss: { code?: string; input?: unknown }) =>
  iss.code === "unrecognized_keys" ? hint : `expected a JSON object, got ${shown(iss.input)}`;

const flag = z.boolean({ error: (iss) => `expected true or false, got ${shown(iss.input)}` });
// A line break would start a new key in the .vv file (see renderVvFile).
const line = z
  .string({ error: (iss) => `expected text on one line, got ${shown(iss.input)}` })
  .regex(/^[^\r\n]*$/, { error: (iss) => `expected text on one line, got ${shown(iss.input)}` });

type OptionSchema<T> = T extends "boolean" ? z.ZodOptional<typeof flag> : z.ZodOptional<typeof line>;
type ConsoleOptionsShape = { [K in ConsoleOptionName]: OptionSchema<(typeof VV_OPTIONS)[K]["type"]> };

/** virt-viewer options a user may set: the names and value types of `console.ts`'s VV_OPTIONS. */
export const consoleOptionsSchema = z.strictObject(
  Object.fromEntries(
    Object.entries(VV_OPTIONS).map(([name, spec]) => [name, (spec.type === "boolean" ? flag : line).optional()]),
  ) as ConsoleOptionsShape,
  {
    error: (iss) =>
      iss.code === "unrecognized_keys"
        ? `console options are ${CONSOLE_OPTION_NAMES.join(", ")}`
        : `expected an object of console options, got ${shown(iss.input)}`,
  },
);
export type ConsoleOptionsBody = z.infer<typeof consoleOptionsSchema>;

/** `POST …/console`: `{ options?: {...} }`; without options the user's remembered defaults apply. */
export const consoleBodySchema = z.strictObject(
  { options: consoleOptionsSchema.optional() },
  { error: unknownFields("a console request takes only options") },
);

/** Take, return and detach: `{}` (or no body at all). */
export const emptyBodySchema = z.strictObject({});

/** `POST …/migrate`: `{ to?: host }`; without `to` the up host with the most headroom. */
export const migrateBodySchema = z.strictObject(
  {
    to: z
      .string({ error: (iss) => `expected a host name, got ${shown(iss.input)}` })
      .min(1, { error: "expected a host name, got an empty one" })
      .optional(),
  },
  { error: unknownFields("a migration takes only to (the destination host)") },
);

/** The body schema of each POST action, and how its refusal names the action. */
export const BODY_SCHEMAS = {
  take: emptyBodySchema,
  return: emptyBodySchema,
  detach: emptyBodySchema,
  console: consoleBodySchema,
  migrate: migrateBodySchema,
  maintenance: emptyBodySchema,
  activate: emptyBodySchema,
} as const;
export type BodyAction = keyof typeof BODY_SCHEMAS;

/**
 * One line per problem, `path: what is expected`, sorted by path so the answer is stable.
 * `action` names the endpoint in hints of the empty bodies.
 */
export function bodyProblems(error: z.ZodError, action: BodyAction): string[] {
  return error.issues
    .map((iss) => {
      const at = (key?: PropertyKey) => [...iss.path, ...(key === undefined ? [] : [key])].map(String).join(".");
      if (iss.code !== "unrecognized_keys") return `${at() || "body"}: ${iss.message}`;
      const hint =
        BODY_SCHEMAS[action] === emptyBodySchema ? `${action} takes no fields: send {} or nothing` : iss.message;
      const many = iss.keys.length > 1;
      return `${iss.keys.map((k) => at(k)).join(", ")}: unknown field${many ? "s" : ""} (${hint})`;
    })
    .sort();
}

/** The body as its action's schema reads it, or the list of problems. */
export function parseBody<A extends BodyAction>(
  action: A,
  body: unknown,
): { ok: true; value: z.infer<(typeof BODY_SCHEMAS)[A]> } | { ok: false; problems: string[] } {
  const r = BODY_SCHEMAS[action].safeParse(body);
  return r.success
    ? { ok: true, value: r.data as z.infer<(typeof BODY_SCHEMAS)[A]> }
    : { ok: false, problems: bodyProblems(r.error, action) };
}
