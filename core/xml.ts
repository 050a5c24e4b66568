// XML in and out through fast-xml-parser: one small element tree (document order kept, so
// what is read can be written back), one parser and one builder configured once.
import { XMLBuilder, XMLParser } from "fast-xml-parser";

/** An element: its qualified name, attributes in document order, and children. */
export interface XmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly children: readonly XmlNode[];
  /** Where the element is in the text it was parsed from, with `parseXml(…, { spans: true })`. */
  readonly span?: { readonly start: number; readonly end: number };
}
/** An element or a run of text. */
export type XmlNode = XmlElement | string;

/** Builds an element; undefined attributes and children are left out (optional parts). */
export function el(
  name: string,
  attrs: Readonly<Record<string, string | number | boolean | undefined>> = {},
  ...children: readonly (XmlNode | undefined | false)[]
): XmlElement {
  const a: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) a[k] = String(v);
  return { name, attrs: a, children: children.filter((c): c is XmlNode => c !== undefined && c !== false) };
}

// fast-xml-parser's ordered form: [{ tag: children, ":@": attrs }, { "#text": "…" }].
type Ordered = Record<string, unknown>;
const COMMON = {
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  // Never `attr` for "true": attribute values are strings to us.
  suppressBooleanAttributes: false,
} as const;

const PARSER_OPTIONS = {
  ...COMMON,
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: false,
  // Entities are decoded by unescapeXml below, in one pass over each value: the library reads
  // numeric references (&#10;, which libxml2 writes for a newline in an attribute) only together
  // with its table of HTML entities, and that costs ~2x (parseMetadataXml: ~100 -> ~220 µs).
  // Nothing is expanded from a DOCTYPE either (libvirt XML declares no entities).
  processEntities: false,
  attributeValueProcessor: (_: string, value: string) => unescapeXml(value),
  tagValueProcessor: (_: string, value: string) => unescapeXml(value),
};
const parser = new XMLParser(PARSER_OPTIONS);
const spanParser = new XMLParser({ ...PARSER_OPTIONS, captureMetaData: true });
const META = XMLParser.getMetaDataSymbol();

// Compact output is for documents whose bytes matter: there an element without children is
// written `<x/>` and one whose only child is empty text `<x></x>` (deployed policy documents
// carry `<vmpools:description></vmpools:description>`, and their hash replaces volumes). The
// builder decides that by tag name (`unpairedTags`), so names that occur both ways are written
// as pairs; one builder per set of names, kept (a program writes a handful of shapes).
// Pretty output (libvirt domain XML, read by libvirt only) writes every empty element `<x/>`.
const prettyBuilder = new XMLBuilder({ ...COMMON, suppressEmptyNode: true, format: true, indentBy: "  " });
const compactBuilders = new Map<string, XMLBuilder>();
function compactBuilderFor(root: XmlElement): XMLBuilder {
  const childless = new Set<string>();
  const withChildren = new Set<string>();
  const walk = (e: XmlElement) => {
    (e.children.length === 0 ? childless : withChildren).add(e.name);
    for (const c of e.children) if (typeof c !== "string") walk(c);
  };
  walk(root);
  const unpaired = [...childless].filter((n) => !withChildren.has(n)).sort();
  const key = unpaired.join("\u0000");
  let b = compactBuilders.get(key);
  if (!b) {
    b = new XMLBuilder({ ...COMMON, unpairedTags: unpaired, suppressUnpairedNode: false, format: false });
    compactBuilders.set(key, b);
  }
  return b;
}

function fromOrdered(nodes: readonly Ordered[], spans: boolean): XmlNode[] {
  const out: XmlNode[] = [];
  for (const n of nodes) {
    if ("#text" in n) {
      out.push(String(n["#text"]));
      continue;
    }
    const name = Object.keys(n).find((k) => k !== ":@");
    // Processing instructions (`?xml`) and comments are not content.
    if (name === undefined || name.startsWith("?") || name.startsWith("!")) continue;
    const attrs = (n[":@"] as Record<string, string> | undefined) ?? {};
    const children = fromOrdered(n[name] as Ordered[], spans);
    const meta = spans ? (n[META as never] as { startIndex: number; endIndex: number } | undefined) : undefined;
    out.push(
      meta
        ? { name, attrs, children, span: { start: meta.startIndex, end: meta.endIndex } }
        : { name, attrs, children },
    );
  }
  return out;
}

function toOrdered(nodes: readonly XmlNode[]): Ordered[] {
  return nodes.map((n) =>
    typeof n === "string"
      ? { "#text": n }
      : Object.keys(n.attrs).length > 0
        ? { [n.name]: toOrdered(n.children), ":@": n.attrs }
        : { [n.name]: toOrdered(n.children) },
  );
}

/**
 * The document's root element, or undefined when the text is not XML. Not a validator: libvirt's
 * output is well-formed, and checking it first doubles the cost. `spans` records where each
 * element is in `xml`, to hand an element back exactly as it was written.
 */
export function parseXml(xml: string, options: { readonly spans?: boolean } = {}): XmlElement | undefined {
  let nodes: XmlNode[];
  try {
    const spans = options.spans ?? false;
    nodes = fromOrdered((spans ? spanParser : parser).parse(xml) as Ordered[], spans);
  } catch {
    return undefined;
  }
  const roots = nodes.filter((n): n is XmlElement => typeof n !== "string");
  return roots.length === 1 ? roots[0] : undefined;
}

/**
 * The element as XML text. Compact (no whitespace added) for documents whose bytes matter, such
 * as the metadata deployed members carry; `pretty` indents by two spaces. Deterministic: the
 * same tree gives the same bytes.
 */
export function buildXml(root: XmlElement, options: { readonly pretty?: boolean } = {}): string {
  const pretty = options.pretty ?? false;
  const text = (pretty ? prettyBuilder : compactBuilderFor(root)).build(toOrdered([root])) as string;
  return pretty ? `${text.replace(/^\n/, "")}\n` : text;
}

/**
 * The element without the whitespace-only text between child elements (indentation libvirt or
 * a pretty builder added), so it builds to the bytes it was written with before.
 */
export function withoutIndentation(e: XmlElement): XmlElement {
  const hasElements = e.children.some((c) => typeof c !== "string");
  const children = e.children
    .filter((c) => !(hasElements && typeof c === "string" && c.trim() === ""))
    .map((c) => (typeof c === "string" ? c : withoutIndentation(c)));
  return { name: e.name, attrs: e.attrs, children };
}

/** The part of a qualified name after its prefix. */
export const localName = (name: string): string => name.slice(name.indexOf(":") + 1);

/** Child elements, optionally only those with this (qualified) name. */
export function childElements(e: XmlElement, name?: string): XmlElement[] {
  return e.children.filter((c): c is XmlElement => typeof c !== "string" && (name === undefined || c.name === name));
}

/** The first child element of this name. */
export const childElement = (e: XmlElement, name: string): XmlElement | undefined =>
  e.children.find((c): c is XmlElement => typeof c !== "string" && c.name === name);

/** The element's text content (its own text runs, joined). */
export const textOf = (e: XmlElement | undefined): string | undefined =>
  e && e.children.filter((c): c is string => typeof c === "string").join("");

/**
 * Every element in document order whose namespace (resolved through `xmlns:prefix` and `xmlns`
 * declarations in scope) is `namespace`, with its local name `local`.
 */
export function elementsInNamespace(root: XmlElement, namespace: string, local: string): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement, scope: ReadonlyMap<string, string>) => {
    let inner = scope;
    for (const [k, v] of Object.entries(e.attrs)) {
      if (k === "xmlns" || k.startsWith("xmlns:")) {
        if (inner === scope) inner = new Map(scope);
        (inner as Map<string, string>).set(k === "xmlns" ? "" : k.slice(6), v);
      }
    }
    const colon = e.name.indexOf(":");
    const prefix = colon < 0 ? "" : e.name.slice(0, colon);
    if (inner.get(prefix) === namespace && localName(e.name) === local) out.push(e);
    for (const c of childElements(e)) walk(c, inner);
  };
  walk(root, new Map());
  return out;
}

/** Escapes text for XML element content and double-quoted attributes (for XML built as text). */
export function escapeXml(value: string): string {
  return value
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** Decodes the five predefined entities and numeric character references. */
export function unescapeXml(value: string): string {
  if (!value.includes("&")) return value;
  return value.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e[0] === "#") return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" }[e]!;
  });
}
