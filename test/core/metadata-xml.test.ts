import fc from "fast-check";
import {
  memberMetadata,
  parseHolderXml,
  parseMetadataXml,
  parsePolicyDocument,
  renderHolderXml,
  renderMetadataXml,
  renderPolicyDocument,
  type MemberMetadata,
} from "../../core/metadata";
import { planPool } from "../../core/plan";
import { resolvePool } from "../../core/validate";
import { unescapeXml } from "../../core/xml";
import { validProps } from "../support/fixtures";
import { poolPropsArb } from "./pool-props";

const odd = `c&"<'>`;
const { pool: resolved } = resolvePool(
  validProps({
    name: "Odd-??",
    description: `a "q" <b> & 'c'\né`,
    comment: "x",
    template: { ...validProps().template, name: "t.1", version: 2, baseImagePath: `/i/a&b'<c>".qcow2` },
    console: { spiceProxy: "http://p:1" },
    host: { migration: { policy: "legacy", customDowntimeMs: 50, autoConverge: "on" } },
  }),
);
const pool = { ...resolved, clusterName: odd };
const plain = resolvePool(validProps({ name: "P-?", size: 1 })).pool;

// Deployed members carry these bytes (and Terraform JSON embeds them): written by the renderer
// before it went through the XML library, and never to change.
const MEMBER =
  '<vmpools:member xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" pool="Odd-??" cluster="c&amp;&quot;&lt;&apos;&gt;" index="1"><vmpools:template name="t.1" version="2" base="/i/a&amp;b&apos;&lt;c&gt;&quot;.qcow2" baseFormat="qcow2" diskFormat="qcow2"/><vmpools:policy type="automatic" stateful="false" prestarted="0" maxVmsPerUser="1" deleteProtection="false"/><vmpools:console spiceProxy="http://p:1"/><vmpools:placement hosts="localhost"/><vmpools:migration mode="manual-and-automatic" policy="legacy" downtimeMs="50" autoConverge="on" compression="inherit"/></vmpools:member>';
const POLICY =
  '<vmpools:pool xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" pool="Odd-??" cluster="c&amp;&quot;&lt;&apos;&gt;"><vmpools:description>a &quot;q&quot; &lt;b&gt; &amp; &apos;c&apos;\né\n\nx</vmpools:description><vmpools:template name="t.1" version="2" base="/i/a&amp;b&apos;&lt;c&gt;&quot;.qcow2" baseFormat="qcow2" diskFormat="qcow2"/><vmpools:policy type="automatic" stateful="false" prestarted="0" maxVmsPerUser="1" deleteProtection="false"/><vmpools:console spiceProxy="http://p:1"/><vmpools:placement hosts="localhost"/><vmpools:migration mode="manual-and-automatic" policy="legacy" downtimeMs="50" autoConverge="on" compression="inherit"/></vmpools:pool>';
const PLAIN_POLICY =
  '<vmpools:pool xmlns:vmpools="https://vmpools.dev/xmlns/pool/1" pool="P-?" cluster="default"><vmpools:description></vmpools:description><vmpools:template name="t" version="1" base="/i/b.qcow2" baseFormat="qcow2" diskFormat="qcow2"/><vmpools:policy type="automatic" stateful="false" prestarted="0" maxVmsPerUser="1" deleteProtection="false"/><vmpools:console/><vmpools:placement hosts="localhost"/><vmpools:migration mode="manual-and-automatic" autoConverge="inherit" compression="inherit"/></vmpools:pool>';

describe("metadata XML as written", () => {
  it("is byte for byte what deployed members carry", () => {
    expect(renderMetadataXml(memberMetadata(pool, 1))).toBe(MEMBER);
    expect(renderPolicyDocument(pool)).toBe(POLICY);
    const p = { ...plain, template: { ...plain.template, name: "t", baseImagePath: "/i/b.qcow2" } };
    expect(renderPolicyDocument(p)).toBe(PLAIN_POLICY);
    expect(renderHolderXml(`al"ic<e&'`)).toBe(
      '<vmpoolsholder:holder xmlns:vmpoolsholder="https://vmpools.dev/xmlns/holder/1" user="al&quot;ic&lt;e&amp;&apos;"/>',
    );
  });
});

describe("metadata XML read back", () => {
  const meta = memberMetadata(pool, 1);

  it("reads what libvirt prints: single quotes, another prefix, indentation, numeric references", () => {
    // libvirt re-serializes stored metadata with libxml2: single-quoted attributes, its own
    // indentation, and characters such as a newline in an attribute as references.
    const reformatted = MEMBER.replace(/="([^"]*)"/g, (_, v: string) => `='${v.replace(/&apos;/g, "&#39;")}'`)
      .replace(/vmpools:/g, "vp:")
      .replace(/xmlns:vmpools/, "xmlns:vp")
      .replace(/></g, ">\n  <");
    expect(parseMetadataXml(reformatted)).toEqual(meta);
    expect(parseMetadataXml(`<metadata>\n  ${MEMBER}\n</metadata>`)).toEqual(meta);
  });

  it("reads the element of our namespace only, and nothing incomplete", () => {
    const foreign = MEMBER.replace("https://vmpools.dev/xmlns/pool/1", "https://example.com/other");
    expect(parseMetadataXml(foreign)).toBeUndefined();
    // Our namespace named somewhere else in the document does not make another element ours.
    expect(parseMetadataXml(`<r xmlns:vmpools="https://vmpools.dev/xmlns/pool/1"/>${foreign}`)).toBeUndefined();
    expect(parseMetadataXml(MEMBER.replace(/<vmpools:policy[^>]*\/>/, ""))).toBeUndefined();
    expect(parseMetadataXml("not xml <<")).toBeUndefined();
    expect(parseMetadataXml(POLICY)).toBeUndefined();
    expect(parsePolicyDocument(MEMBER)).toBeUndefined();
  });

  it("reads a policy document with an empty description either way libvirt may write it", () => {
    const p = { ...plain, template: { ...plain.template, name: "t", baseImagePath: "/i/b.qcow2" } };
    const doc = parsePolicyDocument(
      PLAIN_POLICY.replace("<vmpools:description></vmpools:description>", "<vmpools:description/>"),
    );
    expect(doc).toEqual({ policy: memberMetadata(p, 0), description: "" });
    expect(parsePolicyDocument(POLICY)!.description).toBe(`a "q" <b> & 'c'\né\n\nx`);
  });

  it("round-trips every generated pool's member metadata, policy and holder", () => {
    fc.assert(
      fc.property(poolPropsArb, fc.string({ maxLength: 20 }), (props, user) => {
        const plan = planPool(props);
        for (const m of plan.members) expect(parseMetadataXml(m.metadataXml)).toEqual(m.metadata);
        const doc = parsePolicyDocument(plan.policy.xml)!;
        expect(doc.policy).toEqual({ ...memberMetadata(plan.pool, 0) } satisfies MemberMetadata);
        expect(doc.description).toBe(
          [plan.pool.description, plan.pool.comment].filter((s) => s.length > 0).join("\n\n"),
        );
        expect(parseHolderXml(renderHolderXml(user))).toBe(user);
      }),
      { numRuns: 60 },
    );
  });

  it("reads the holder whatever the quoting, and nothing from another namespace", () => {
    expect(parseHolderXml("<h:holder xmlns:h='https://vmpools.dev/xmlns/holder/1' user='bob &amp; co'/>")).toBe(
      "bob & co",
    );
    expect(parseHolderXml('<x:holder xmlns:x="https://example.com/x" user="eve"/>')).toBeUndefined();
    expect(parseHolderXml(undefined)).toBeUndefined();
    expect(unescapeXml("a&amp;b&#10;&#x41;&lt;")).toBe("a&b\nA<");
  });
});
