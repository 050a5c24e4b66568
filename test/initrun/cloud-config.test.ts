import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { PoolSpecError } from "../../core";
import { cloudConfigProblems, renderCloudConfig, toYaml, type CloudConfigProps } from "../../core/initrun/cloud-config";

// Real hashes (`openssl passwd -6/-5 -salt saltsalt secret`); the others only need the right shape.
const SHA512 = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
const SHA256 = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
const YESCRYPT = `$y$j9T$abcdefghijklmnopqrstuv$${"A".repeat(43)}`;
const BCRYPT_2B = `$2b$12$${"a".repeat(53)}`;
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEh2+f0rT0oYk7wq0gR8dJc1S5s9E5mC1r1m6b5dWm8n alice@lab";

/**
 * cloud-init parses user-data with PyYAML (YAML 1.1), so the round trip uses it too: Debian's
 * python3-yaml, installed by scripts/setup-system.sh, under Debian's own python3.
 */
const PYTHON = "/usr/bin/python3";
beforeAll(() => {
  const r = spawnSync(PYTHON, ["-c", "import yaml"]);
  if (r.status !== 0) throw new Error(`${PYTHON} cannot import yaml; run: bash scripts/setup-system.sh`);
});

/** Parses YAML documents with PyYAML's safe_load_all; dates and other non-JSON types show up as strings. */
function pyyaml(docs: readonly string[]): unknown[] {
  const script =
    "import sys, json, yaml\n" +
    "docs = list(yaml.safe_load_all(sys.stdin.read()))\n" +
    "sys.stdout.write(json.dumps(docs, default=lambda v: 'NON-JSON ' + type(v).__name__ + ' ' + str(v)))\n";
  const r = spawnSync(PYTHON, ["-c", script], {
    input: docs.map((d) => `---\n${d}`).join(""),
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`PyYAML could not parse:\n${r.stderr}`);
  return JSON.parse(r.stdout) as unknown[];
}
const parse = (yaml: string): unknown => pyyaml([yaml])[0];

describe("renderCloudConfig", () => {
  it("gives each member its hostname and nothing else by default", () => {
    expect(renderCloudConfig({}, "mypool-1")).toBe("#cloud-config\nhostname: mypool-1\npreserve_hostname: false\n");
  });

  it("writes a full config in a stable key order (exact text)", () => {
    const props: CloudConfigProps = {
      users: [
        {
          name: "alice",
          groups: ["adm", "sudo"],
          shell: "/bin/bash",
          sudo: true,
          passwordHash: SHA512,
          sshAuthorizedKeys: [ED25519],
        },
        { name: "bob" },
      ],
      passwordHash: SHA256,
      domain: "lab.example.com",
      timeZone: "Europe/Berlin",
      packages: ["qemu-guest-agent"],
      runCommands: ["systemctl enable --now qemu-guest-agent", "echo 'done: ok' > /root/first-boot"],
      writeFiles: [
        { path: "/etc/motd", content: "Pool member\nReverted on return.\n", permissions: "0644" },
        { path: "/home/alice/.hushlogin", content: "", owner: "alice:alice", defer: true },
      ],
      extra: { ssh_pwauth: false, ntp: { servers: ["ntp1.lab"], enabled: true } },
    };
    expect(renderCloudConfig(props, "mypool-1")).toBe(
      [
        "#cloud-config",
        "hostname: mypool-1",
        "fqdn: mypool-1.lab.example.com",
        "preserve_hostname: false",
        "timezone: Europe/Berlin",
        "users:",
        "  - default",
        "  - name: alice",
        "    groups: adm, sudo",
        "    shell: /bin/bash",
        '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
        "    lock_passwd: false",
        `    hashed_passwd: "${SHA512}"`,
        "    ssh_authorized_keys:",
        `      - ${ED25519}`,
        "  - name: bob",
        `password: "${SHA256}"`,
        "chpasswd:",
        "  expire: false",
        "packages:",
        "  - qemu-guest-agent",
        "write_files:",
        "  - path: /etc/motd",
        "    content: |",
        "      Pool member",
        "      Reverted on return.",
        '    permissions: "0644"',
        "  - path: /home/alice/.hushlogin",
        '    content: ""',
        '    owner: "alice:alice"',
        "    defer: true",
        "runcmd:",
        "  - systemctl enable --now qemu-guest-agent",
        "  - \"echo 'done: ok' > /root/first-boot\"",
        "ntp:",
        "  enabled: true",
        "  servers:",
        "    - ntp1.lab",
        "ssh_pwauth: false",
        "",
      ].join("\n"),
    );
  });

  it("parses back to the intended cloud-config", () => {
    const props: CloudConfigProps = {
      users: [{ name: "alice", sudo: "ALL=(ALL) ALL", passwordHash: YESCRYPT, sshAuthorizedKeys: [ED25519] }],
      keepDefaultUser: false,
      runCommands: ["if [ -e /x ]; then\n  echo yes # comment\nfi\n"],
    };
    expect(parse(renderCloudConfig(props, "desk-07"))).toEqual({
      hostname: "desk-07",
      preserve_hostname: false,
      users: [
        {
          name: "alice",
          sudo: "ALL=(ALL) ALL",
          lock_passwd: false,
          hashed_passwd: YESCRYPT,
          ssh_authorized_keys: [ED25519],
        },
      ],
      runcmd: ["if [ -e /x ]; then\n  echo yes # comment\nfi\n"],
    });
  });

  it("is byte-identical whatever order extra's keys were given in", () => {
    const a = renderCloudConfig({ extra: { b: 1, a: { y: 2, x: [{ q: 1, p: 2 }] } } }, "m-1");
    const b = renderCloudConfig({ extra: { a: { x: [{ p: 2, q: 1 }], y: 2 }, b: 1 } }, "m-1");
    expect(a).toBe(b);
  });

  it("keeps any extra key a key, even __proto__", () => {
    const extra = JSON.parse('{"__proto__": {"x": 1}}') as Record<string, unknown>;
    expect(renderCloudConfig({ extra }, "m-1")).toContain("\n__proto__:\n  x: 1\n");
  });

  it("refuses invalid props and hostnames with PoolSpecError", () => {
    expect(() => renderCloudConfig({ passwordHash: "hunter2" }, "m-1")).toThrow(PoolSpecError);
    expect(() => renderCloudConfig({}, "My_Host")).toThrow(/hostname = "My_Host": must be a lower-case host label/);
  });
});

describe("YAML writer", () => {
  const TRICKY = [
    "",
    " ",
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "N",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "0",
    "1",
    "-1",
    "+1",
    "017",
    "0o17",
    "0x1F",
    "1_000",
    "1:20",
    "1e3",
    "1.0",
    ".5",
    ".inf",
    "-.inf",
    ".nan",
    "NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    "-",
    "- a",
    "--- x",
    "...",
    "a: b",
    "a:b",
    "a #b",
    "a# b",
    "#x",
    "@x",
    "`x",
    "%x",
    "!x",
    "!!str",
    "&x",
    "*x",
    "|",
    ">",
    "?",
    "? x",
    "[a]",
    "{a: 1}",
    "a,b",
    "'",
    '"',
    "\\",
    "'quoted'",
    " lead",
    "trail ",
    "tab\tinside",
    "\tlead",
    "multi\nline",
    "multi\nline\n",
    "keep\n\n",
    "keep\n\n\n",
    "\nleading newline",
    "  indented\nfirst line",
    "a\n  indented\n\tand tab\n",
    "a\n \nb",
    "crlf\r\nline",
    "nel\u0085x",
    "ls\u2028ps\u2029",
    "bom\uFEFF",
    "bell\u0007",
    "del\u007F",
    "ünïcödé ß",
    "€ and 😀",
    "/etc/passwd",
    "ALL=(ALL) NOPASSWD:ALL",
    "$6$salt$hash",
    "a: |\n  b",
  ];

  it("round-trips tricky strings as values, list items and keys", () => {
    const values = TRICKY.map((s) => ({ value: s, list: [s, [s]], nested: { [s]: s } }));
    expect(pyyaml(values.map((v) => toYaml(v)))).toEqual(values);
    expect(parse(toYaml(TRICKY))).toEqual(TRICKY);
    expect(pyyaml(TRICKY.map((s) => toYaml(s)))).toEqual(TRICKY);
  });

  it("round-trips numbers, booleans, null and empty collections", () => {
    const values = [0, -0, 1, -7, 3.25, -1e-7, 1e21, 5e-324, 1.7976931348623157e308, 2 ** 53 + 2, true, false, null];
    const doc = { values, emptyList: [], emptyMap: {}, nested: [[], {}, [[1]]] };
    expect(JSON.stringify(parse(toYaml(doc)))).toBe(JSON.stringify(doc));
  });

  it("property: any JSON value survives PyYAML unchanged", () => {
    const samples = fc.sample(fc.jsonValue({ stringUnit: "binary", maxDepth: 4 }), { numRuns: 400, seed: 20240617 });
    const parsed = pyyaml(samples.map((v) => toYaml(v)));
    samples.forEach((v, i) => expect([i, JSON.stringify(parsed[i])]).toEqual([i, JSON.stringify(v)]));
  });

  it("writes plain scalars only where no parser could misread them (exact text)", () => {
    expect(toYaml(["plain", "yes", "1", "a: b", "#x", "two words", "/abs/path", "x\ny\n", ""])).toBe(
      [
        "- plain",
        '- "yes"',
        '- "1"',
        '- "a: b"',
        '- "#x"',
        "- two words",
        "- /abs/path",
        "- |",
        "  x",
        "  y",
        '- ""',
        "",
      ].join("\n"),
    );
    expect(toYaml({ "a b": { c: [1, { d: null }] } })).toBe("a b:\n  c:\n    - 1\n    - d: null\n");
    expect(toYaml('nel\u0085 tab\t \\ "q"')).toBe('"nel\\u0085 tab\\t \\\\ \\"q\\""\n');
  });

  it("refuses values YAML cannot carry", () => {
    expect(() => toYaml({ a: [Number.NaN] })).toThrow(/value\.a\[0\] as YAML: must be a finite number/);
    expect(() => toYaml({ when: new Date(0) })).toThrow(/value\.when as YAML: must be a string, finite number/);
    expect(() => toYaml({ f: undefined })).toThrow(/value\.f as YAML: must be a string/);
  });
});

describe("cloudConfigProblems", () => {
  it("accepts the crypt formats cloud-init hands to usermod", () => {
    for (const hash of [SHA512, SHA256, YESCRYPT, BCRYPT_2B]) {
      expect(cloudConfigProblems({ users: [{ name: "alice", passwordHash: hash }] })).toEqual([]);
    }
    expect(cloudConfigProblems({ passwordHash: SHA512 })).toEqual([]);
  });

  const CLEAR = "Correct-Horse-Battery-9";
  it.each<[string, CloudConfigProps, string, RegExp]>([
    [
      "a clear-text user password",
      { users: [{ name: "alice", passwordHash: CLEAR }] },
      "users[0].passwordHash",
      /looks like a clear-text password; only hashes are accepted: generate one with `mkpasswd -m sha-512`/,
    ],
    [
      "a clear-text default password",
      { passwordHash: CLEAR },
      "passwordHash",
      /clear-text password.*mkpasswd -m sha-512/,
    ],
    ["a truncated hash", { passwordHash: SHA512.slice(0, -1) }, "passwordHash", /not a complete crypt\(3\) hash/],
    ["an MD5 hash", { passwordHash: "$1$saltsalt$abcdefghijklmnopqrstuv" }, "passwordHash", /MD5.*too weak/],
    [
      "yescrypt for the default user (cloud-init would set it literally)",
      { passwordHash: YESCRYPT },
      "passwordHash",
      /literal password of the default user; use a \$6\$ hash/,
    ],
    [
      "a default password without a default user",
      { passwordHash: SHA512, keepDefaultUser: false, users: [{ name: "alice" }] },
      "passwordHash",
      /keepDefaultUser is false/,
    ],
    [
      "a private key instead of a public one",
      {
        users: [
          {
            name: "alice",
            sshAuthorizedKeys: [`-----BEGIN OPENSSH PRIVATE KEY-----\n${CLEAR}\n-----END OPENSSH PRIVATE KEY-----`],
          },
        ],
      },
      "users[0].sshAuthorizedKeys[0]",
      /is a private key; give the public key/,
    ],
    [
      "a malformed public key",
      { users: [{ name: "alice", sshAuthorizedKeys: ["AAAAC3Nza alice"] }] },
      "users[0].sshAuthorizedKeys[0]",
      /OpenSSH public key line/,
    ],
    ["an upper-case user", { users: [{ name: "Alice" }] }, "users[0].name", /1-32 of a-z/],
    ["the reserved name default", { users: [{ name: "default" }] }, "users[0].name", /not "default"/],
    ["a duplicate user", { users: [{ name: "a" }, { name: "a" }] }, "users[1].name", /given twice/],
    ["a sudo word", { users: [{ name: "a", sudo: "yes" }] }, "users[0].sudo", /sudoers rule such as "ALL=\(ALL\) ALL"/],
    ["a relative shell", { users: [{ name: "a", shell: "bash" }] }, "users[0].shell", /absolute path/],
    ["a bad group", { users: [{ name: "a", groups: ["wheel users"] }] }, "users[0].groups[0]", /group name/],
    ["a Windows time zone", { timeZone: "W. Europe Standard Time" }, "timeZone", /IANA time zone/],
    ["a bad domain", { domain: "lab_example" }, "domain", /DNS domain/],
    ["a package with spaces", { packages: ["vim nano"] }, "packages[0]", /package name/],
    ["an empty command", { runCommands: [" "] }, "runCommands[0]", /non-empty shell command/],
    ["a relative file path", { writeFiles: [{ path: "etc/motd", content: "" }] }, "writeFiles[0].path", /absolute/],
    [
      "numeric permissions",
      { writeFiles: [{ path: "/x", content: "", permissions: "644" }] },
      "writeFiles[0].permissions",
      /"0644"/,
    ],
    ["a generated key in extra", { extra: { runcmd: ["x"] } }, "extra.runcmd", /is generated; set runCommands instead/],
    ["hostname in extra", { extra: { hostname: "x" } }, "extra.hostname", /is generated/],
    [
      "a value YAML cannot carry",
      { extra: { bootcmd: [Number.POSITIVE_INFINITY] } },
      "extra.bootcmd[0]",
      /finite number/,
    ],
  ])("%s", (_, props, prop, message) => {
    const issues = cloudConfigProblems(props);
    const issue = issues.find((i) => i.prop === prop);
    expect(issue).toBeDefined();
    expect(issue!.message).toMatch(message);
    const error = new PoolSpecError("cloud-config", issues);
    expect(error.message).not.toContain(CLEAR);
    expect(error.message).not.toContain(SHA512.slice(12));
  });

  it("redacts password hashes and private keys", () => {
    const issues = cloudConfigProblems({
      passwordHash: "secret",
      users: [{ name: "a", passwordHash: "secret", sshAuthorizedKeys: ["-----BEGIN RSA PRIVATE KEY-----"] }],
    });
    expect(issues.map((i) => [i.prop, i.value])).toEqual([
      ["users[0].sshAuthorizedKeys[0]", "<redacted>"],
      ["users[0].passwordHash", "<redacted>"],
      ["passwordHash", "<redacted>"],
    ]);
  });
});
