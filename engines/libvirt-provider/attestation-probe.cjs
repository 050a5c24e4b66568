#!/usr/bin/env node
// Plan-time attestation check of one trusted cluster, run by Terraform's `external` data source.
// Input (stdin, JSON of strings): { "settings": "<AttestationSettings as JSON, no secrets>",
//   "client_key_file": "" or the path of Keylime's client key (a 0600 file in the stack's assets) }
// Output (stdout, JSON of strings): { "not_trusted": "h1 (untrusted: OpenAttestation: trust_lvl
//   untrusted); h2 (unreachable: …)", "trusted": "h3, h4" }; the data source's postcondition fails
// the plan when not_trusted is not empty. A verdict is always an answer (an unreachable service
// makes its hosts unreachable), so this exits non-zero only for a query it cannot use.
// Standalone on purpose: the stack's assets hold this file with protocol.cjs beside it (the
// attestation client the reconciler runs too), and nothing else of vmpools.
"use strict";
const { readFileSync } = require("node:fs");
// The stack's assets put protocol.cjs beside this file (engines/cdktf/trusted-cluster.ts).
const { createAttestationClient } = require("./protocol.cjs");

function parseQuery(input) {
  const query = input.trim() ? JSON.parse(input) : {};
  if (typeof query.settings !== "string" || query.settings === "") throw new Error("query.settings is required");
  const settings = JSON.parse(query.settings);
  if (!settings || typeof settings.url !== "string" || !Array.isArray(settings.hosts)) {
    throw new Error("query.settings must be a trusted cluster's attestation settings (url, hosts, …)");
  }
  const keyFile = query.client_key_file || "";
  let clientKeyPem;
  if (keyFile !== "") {
    try {
      clientKeyPem = readFileSync(keyFile, "utf8");
    } catch (e) {
      // The path only: the file holds a secret.
      throw new Error(`cannot read the client key file ${keyFile} (${e.code || e.message})`);
    }
  }
  return { settings, clientKeyPem };
}

async function main(input) {
  const { settings, clientKeyPem } = parseQuery(input);
  const client = createAttestationClient(settings, { clientKeyPem });
  try {
    const verdicts = await client.attest();
    return {
      not_trusted: verdicts
        .filter((v) => v.level !== "trusted")
        .map((v) => `${v.host} (${v.level}: ${v.reason})`)
        .join("; "),
      trusted: verdicts
        .filter((v) => v.level === "trusted")
        .map((v) => v.host)
        .join(", "),
    };
  } finally {
    client.close();
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  main(input).then(
    // Exit once written: a socket the client kept would otherwise hold Terraform's plan.
    (result) => process.stdout.write(JSON.stringify(result), () => process.exit(0)),
    (e) => {
      process.stderr.write(`vmpools attestation probe: ${e.message}\n`);
      process.exit(1);
    },
  );
});
