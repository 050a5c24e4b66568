import { readFileSync } from "node:fs";
import { join } from "node:path";

/** Terraform schema JSON (the `terraform providers schema -json` shape), as much as we read. */
interface Attribute {
  type?: unknown;
  nested_type?: { nesting_mode: "single" | "list" | "set" | "map"; attributes: Record<string, Attribute> };
  required?: boolean;
  optional?: boolean;
  computed?: boolean;
}
interface Block {
  attributes?: Record<string, Attribute>;
}

const META_ARGUMENTS = new Set([
  "//",
  "provider",
  "lifecycle",
  "depends_on",
  "count",
  "for_each",
  "connection",
  "provisioner",
]);
const isToken = (v: unknown) => typeof v === "string" && /\$\{/.test(v);

function loadSchemas(): Map<string, { kind: "resource" | "data"; block: Block }> {
  const out = new Map<string, { kind: "resource" | "data"; block: Block }>();
  for (const file of ["dmacvicar-libvirt-0.9.7.code-schema.json", "hashicorp-external-2.3.5.schema.json"]) {
    const json = JSON.parse(readFileSync(join(__dirname, "../../providers/schema", file), "utf8"));
    for (const provider of Object.values<{
      resource_schemas?: Record<string, { block: Block }>;
      data_source_schemas?: Record<string, { block: Block }>;
    }>(json.provider_schemas)) {
      for (const [name, s] of Object.entries(provider.resource_schemas ?? {}))
        out.set(`resource.${name}`, { kind: "resource", block: s.block });
      for (const [name, s] of Object.entries(provider.data_source_schemas ?? {}))
        out.set(`data.${name}`, { kind: "data", block: s.block });
    }
  }
  // Terraform's built-in `terraform_data` (terraform.io/builtin/terraform), which holds the hash
  // of a pool's policy document.
  out.set("resource.terraform_data", {
    kind: "resource",
    block: {
      attributes: {
        id: { type: "string", computed: true },
        input: { type: "dynamic", optional: true },
        output: { type: "dynamic", computed: true },
        triggers_replace: { type: "dynamic", optional: true },
      },
    },
  });
  return out;
}
const SCHEMAS = loadSchemas();

function checkType(type: unknown, value: unknown, path: string, problems: string[]): void {
  if (isToken(value) || type === "dynamic") return;
  if (type === "string") {
    if (typeof value !== "string") problems.push(`${path}: expected string, got ${JSON.stringify(value)}`);
  } else if (type === "number") {
    if (typeof value !== "number") problems.push(`${path}: expected number, got ${JSON.stringify(value)}`);
  } else if (type === "bool") {
    if (typeof value !== "boolean") problems.push(`${path}: expected bool, got ${JSON.stringify(value)}`);
  } else if (Array.isArray(type) && (type[0] === "list" || type[0] === "set")) {
    if (!Array.isArray(value)) problems.push(`${path}: expected list, got ${JSON.stringify(value)}`);
    else value.forEach((v, i) => checkType(type[1], v, `${path}[${i}]`, problems));
  } else if (Array.isArray(type) && type[0] === "map") {
    if (typeof value !== "object" || value === null || Array.isArray(value)) problems.push(`${path}: expected map`);
    else for (const [k, v] of Object.entries(value)) checkType(type[1], v, `${path}.${k}`, problems);
  } else {
    problems.push(`${path}: unsupported schema type ${JSON.stringify(type)}`);
  }
}

function checkAttributes(
  attrs: Record<string, Attribute>,
  body: Record<string, unknown>,
  path: string,
  problems: string[],
  topLevel: boolean,
): void {
  for (const [key, value] of Object.entries(body)) {
    if (topLevel && META_ARGUMENTS.has(key)) continue;
    const attr = attrs[key];
    if (!attr) {
      problems.push(`${path}.${key}: not in the provider schema`);
      continue;
    }
    if (attr.computed && !attr.optional && !attr.required)
      problems.push(`${path}.${key}: computed-only, cannot be set`);
    if (value === null || value === undefined) continue;
    if (attr.nested_type) {
      const nested = attr.nested_type;
      if (isToken(value)) continue;
      if (nested.nesting_mode === "single") {
        checkAttributes(nested.attributes, value as Record<string, unknown>, `${path}.${key}`, problems, false);
      } else if (!Array.isArray(value)) {
        problems.push(`${path}.${key}: expected a list of objects`);
      } else {
        value.forEach((v, i) =>
          checkAttributes(nested.attributes, v as Record<string, unknown>, `${path}.${key}[${i}]`, problems, false),
        );
      }
    } else {
      checkType(attr.type, value, `${path}.${key}`, problems);
    }
  }
  for (const [key, attr] of Object.entries(attrs)) {
    if (attr.required && body[key] === undefined) problems.push(`${path}.${key}: required attribute missing`);
  }
}

/**
 * Every attribute of every synthesized libvirt/external resource and data source exists in the
 * pinned provider schema, with the right type, and required attributes are present.
 */
export function schemaProblems(synthesized: {
  resource?: Record<string, Record<string, Record<string, unknown>>>;
  data?: Record<string, Record<string, Record<string, unknown>>>;
}): { problems: string[]; checked: number } {
  const problems: string[] = [];
  let checked = 0;
  for (const [kind, group] of [
    ["resource", synthesized.resource ?? {}],
    ["data", synthesized.data ?? {}],
  ] as const) {
    for (const [type, instances] of Object.entries(group)) {
      const schema = SCHEMAS.get(`${kind}.${type}`);
      if (!schema) {
        problems.push(`${kind}.${type}: no such type in the pinned provider schemas`);
        continue;
      }
      for (const [name, body] of Object.entries(instances)) {
        checked++;
        checkAttributes(schema.block.attributes ?? {}, body, `${kind}.${type}.${name}`, problems, true);
      }
    }
  }
  return { problems, checked };
}
