#!/usr/bin/env node
// Plan-time probe for one libvirt host, run by Terraform's `external` data source.
// Input (stdin, JSON): { "uri", "candidates": "poolA,poolB", "member_pattern": "^MyPool-([0-9]{3})$",
//   "detached": "MyPool-004,…" (members detached from the pool: independent VMs, not counted),
//   "size": "3", "holder_uri": "<the reconciler's holder namespace>",
//   "member_uri": "<the pool's member namespace>", "host": "h1" (the name of this host),
//   "placement": "h1=1-5,9;h2=6-8" (which member indices the plan puts on which host) }
// Output (stdout, JSON of strings): the candidate storage pool with the most free space and the
// highest member index already defined on the host (the shrink guard compares it with `size`),
// and the members above `size` that a user holds (the reconciler marks them in their metadata):
// those are never destroyed by a shrink. And `misplaced`: members within the size that are
// defined here while the plan puts them on another host, e.g. "MyPool-007 (planned on h2)":
// creating them there would make a second domain of the same name.
// Standalone on purpose: Terraform copies this file alone into the stack's assets.
"use strict";
const { execFileSync } = require("node:child_process");

function virsh(uri, args) {
  return execFileSync("virsh", ["-q", "-c", uri, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** A domain's metadata element in namespace `ns`, or undefined when it has none. */
function metadataOf(uri, domain, ns) {
  try {
    return virsh(uri, ["metadata", "--domain", domain, "--uri", ns]);
  } catch (e) {
    if (/metadata not found/i.test(String(e.stderr || ""))) return undefined;
    throw e;
  }
}

/** The holder the reconciler marked on a domain, or undefined. */
function holderOf(uri, domain, holderUri) {
  const m = /\buser="([^"]*)"/.exec(metadataOf(uri, domain, holderUri) || "");
  return m ? m[1] : undefined;
}

/** "h1=1-5,9;h2=6-8" as index → host name. */
function parsePlacement(text) {
  const hostOf = new Map();
  for (const part of String(text || "").split(";")) {
    const eq = part.lastIndexOf("=");
    if (eq < 1) continue;
    const host = part.slice(0, eq);
    for (const range of part
      .slice(eq + 1)
      .split(",")
      .filter(Boolean)) {
      const [from, to] = range.split("-").map(Number);
      for (let i = from; i <= (to === undefined ? from : to); i++) hostOf.set(i, host);
    }
  }
  return hostOf;
}

function main(query) {
  const uri = query.uri;
  if (!uri) throw new Error("query.uri is required");
  const candidates = String(query.candidates || "")
    .split(",")
    .filter(Boolean);
  let best;
  const problems = [];
  for (const name of candidates) {
    let info;
    try {
      info = virsh(uri, ["pool-info", "--bytes", name]);
    } catch (e) {
      problems.push(`${name}: ${String(e.stderr || e.message).trim()}`);
      continue;
    }
    if (!/^State:\s+running/m.test(info)) {
      problems.push(`${name}: not running`);
      continue;
    }
    const available = BigInt((/^Available:\s+(\d+)/m.exec(info) || [])[1] || "0");
    // Strictly greater: on a tie the earlier candidate wins, so the pick is stable.
    if (!best || available > best.available) best = { name, available };
  }
  if (candidates.length > 0 && !best) {
    throw new Error(`no usable storage pool on ${uri}: ${problems.join("; ")}`);
  }
  let maxIndex = 0;
  let count = 0;
  const heldAbove = [];
  // Listed as detached but still a member (vmpools detach not run): Terraform would forget a VM
  // the reconciler keeps handing out.
  const undetached = [];
  const size = Number(query.size || "0");
  const misplaced = [];
  const planned = query.host && query.placement !== undefined ? parsePlacement(query.placement) : undefined;
  if (query.member_pattern) {
    const pattern = new RegExp(query.member_pattern);
    const detached = new Set(String(query.detached || "").split(","));
    for (const line of virsh(uri, ["list", "--all", "--name"]).split("\n")) {
      const m = pattern.exec(line.trim());
      if (m && detached.has(line.trim()) && query.member_uri && metadataOf(uri, line.trim(), query.member_uri)) {
        undetached.push(line.trim());
      }
      if (m && !detached.has(line.trim())) {
        count++;
        maxIndex = Math.max(maxIndex, Number(m[1]));
        const elsewhere = planned && planned.get(Number(m[1]));
        if (elsewhere !== undefined && elsewhere !== query.host)
          misplaced.push(`${line.trim()} (planned on ${elsewhere})`);
        if (query.holder_uri && size > 0 && Number(m[1]) > size) {
          const user = holderOf(uri, line.trim(), query.holder_uri);
          if (user !== undefined) heldAbove.push(`${line.trim()} (${user})`);
        }
      }
    }
  }
  return {
    storage_pool: best ? best.name : "",
    available_bytes: best ? String(best.available) : "",
    max_member_index: String(maxIndex),
    held_above: heldAbove.join(", "),
    undetached: undetached.join(", "),
    member_count: String(count),
    misplaced: misplaced.join(", "),
  };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  try {
    process.stdout.write(JSON.stringify(main(input.trim() ? JSON.parse(input) : {})));
  } catch (e) {
    process.stderr.write(`vmpools host probe: ${e.message}\n`);
    process.exit(1);
  }
});
