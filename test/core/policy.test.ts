import fc from "fast-check";
import { parseMetadataXml, parsePolicyDocument, planPool, policyVolumeName } from "../../core";
import { groupPools, parseMembers, policyDocumentsByPool } from "../../reconciler/pools";
import { validProps } from "../support/fixtures";

describe("pool policy document", () => {
  it("carries the current policy and description, and reads back", () => {
    const plan = planPool(
      validProps({
        description: 'Desk <pool> & "friends"',
        comment: "second line",
        prestarted: 3,
        maxVmsPerUser: 2,
        console: { spiceProxy: "http://proxy.example.com:3128" },
        deleteProtection: true,
      }),
    );
    const doc = parsePolicyDocument(plan.policy.xml)!;
    expect(doc.description).toBe('Desk <pool> & "friends"\n\nsecond line');
    expect(doc.policy).toMatchObject({
      pool: "MyPool-???",
      prestarted: 3,
      maxVmsPerUser: 2,
      spiceProxy: "http://proxy.example.com:3128",
      deleteProtection: true,
      type: "automatic",
      templateName: "debian-12",
      templateVersion: 1,
    });
    // A member's metadata is not a policy document, and the other way round.
    expect(parsePolicyDocument(plan.members[0]!.metadataXml)).toBeUndefined();
    expect(parseMetadataXml(plan.policy.xml)).toBeUndefined();
  });

  it("changes exactly when the policy or the template changes, never with size or detached members", () => {
    const base = planPool(validProps()).policy.xml;
    expect(planPool(validProps({ size: 20 })).policy.xml).toBe(base);
    expect(planPool(validProps({ detached: ["MyPool-002"] })).policy.xml).toBe(base);
    for (const edit of [
      { prestarted: 1 },
      { maxVmsPerUser: 4 },
      { description: "x" },
      { console: { spiceProxy: "http://p.example.com:1" } },
      { type: "manual" as const },
      { stateful: true },
      { template: { ...validProps().template, version: 2 } },
    ]) {
      expect(planPool(validProps(edit)).policy.xml).not.toBe(base);
    }
  });

  it("names a pool's policy volume per host", () => {
    expect(policyVolumeName("MyPool-???", "h1")).toBe("MyPool-###@h1.vmpools-policy.xml");
  });

  it("policy volume names of different pools or hosts never collide", () => {
    const poolName = fc.stringMatching(/^[A-Za-z0-9._-]{1,8}\??[A-Za-z0-9._-]{0,4}$/);
    const hostName = fc.stringMatching(/^[A-Za-z0-9._-]{1,10}$/);
    fc.assert(
      fc.property(
        poolName,
        hostName,
        poolName,
        hostName,
        (a, ha, b, hb) => (a === b && ha === hb) || policyVolumeName(a, ha) !== policyVolumeName(b, hb),
      ),
    );
    // The shape that would collide with a plain "." between the two names.
    expect(policyVolumeName("a.b", "c")).not.toBe(policyVolumeName("a", "b.c"));
  });

  it("the reconciler's pool policy is the document when there is one, else the newest member's", () => {
    const created = planPool(validProps({ size: 2, prestarted: 1 }));
    const records = parseMembers(
      created.members.map((m) => ({ name: m.name, uuid: m.name, state: "shut off", metadataXml: m.metadataXml })),
      "localhost",
    );
    expect(groupPools(records).get("MyPool-???")!.policy.prestarted).toBe(1);
    const edited = planPool(
      validProps({ size: 2, prestarted: 2, maxVmsPerUser: 5, template: { ...validProps().template, version: 7 } }),
    );
    const docs = policyDocumentsByPool([edited.policy.xml, "<not-a-policy/>"]);
    const pool = groupPools(records, docs).get("MyPool-???")!;
    expect(pool.policy).toMatchObject({ prestarted: 2, maxVmsPerUser: 5, templateVersion: 7 });
    // Members keep the template version they were created from.
    expect(pool.members.map((m) => m.templateVersion)).toEqual([1, 1]);
  });
});
