// A throwaway PKI for the attestation tests, made with the real `openssl` CLI: a test CA with a
// server certificate for 127.0.0.1/localhost and a client certificate ("vmpools-tenant"), and an
// unrelated CA with its own server certificate, for "certificate does not verify".
//
// The CAs and the client have RSA 2048 keys, the servers EC P-256 ones (faster to make):
// node-forge, which reads the truststore and checks PEM certificates in core/trust.ts, decodes
// only RSA public keys (a PKCS#12 holding an EC certificate opens with its cert bag's `cert`
// null). Nothing is cached across runs.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestPki {
  readonly dir: string;
  readonly caPem: string;
  readonly caCertPath: string;
  readonly serverCertPem: string;
  readonly serverCertPath: string;
  readonly serverKeyPem: string;
  readonly serverKeyPath: string;
  /** Signed by the test CA, subject CN `clientCommonName`, extendedKeyUsage clientAuth. */
  readonly clientCertPem: string;
  readonly clientCertPath: string;
  readonly clientKeyPem: string;
  readonly clientKeyPath: string;
  readonly clientCommonName: string;
  /** A second CA that signed nothing the test CA trusts. */
  readonly otherCaPem: string;
  readonly otherCaCertPath: string;
  /** For 127.0.0.1/localhost too, but signed by the other CA: fails verification against caPem. */
  readonly otherServerCertPem: string;
  readonly otherServerCertPath: string;
  readonly otherServerKeyPem: string;
  readonly otherServerKeyPath: string;
  /**
   * Writes a PKCS#12 truststore holding only the CA certificate (no key), as oVirt's
   * AttestationTruststore would be, and returns its path (in `dir`, one file per password).
   *
   * OpenSSL 3's defaults (PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC for the certificate bag,
   * an HMAC-SHA256 MAC) are what this writes: node-forge 1.4 opens them (checked by the tests),
   * so the legacy `-certpbe PBE-SHA1-3DES -macalg sha1` is not needed. Java reads these since
   * 8u301/11.0.12, but keytool lists a cert-only entry as trusted only with Oracle's
   * trusted-key-usage attribute, which `-jdktrust` adds from OpenSSL 3.2 (this machine has 3.0).
   */
  truststoreP12(password: string): string;
}

export const CLIENT_COMMON_NAME = "vmpools-tenant";

// Extensions stated here rather than taken from the system openssl.cnf, whose defaults for
// `req -x509` (CA:TRUE on every certificate) differ between distributions.
const CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

function openssl(args: readonly string[]): void {
  // Output is swallowed: openssl prints nothing secret here, but its noise is useless in tests.
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** Creates the PKI in `dir` (created if missing). Synchronous: about 0.5 s. */
export function makeTestPki(dir: string): TestPki {
  mkdirSync(dir, { recursive: true });
  const config = join(dir, "openssl.cnf");
  writeFileSync(config, CONFIG);
  const path = (name: string): string => join(dir, name);

  // RSA where node-forge reads the certificate (the CAs: truststore and caCertificatePem; the
  // client: clientCertificatePem), EC P-256 for the servers, whose certificates only Node's TLS
  // reads: an RSA 2048 key takes 0.05-0.5 s to make on a busy machine, an EC key 0.01 s. The
  // keys are made concurrently.
  const rsa = ["ca", "client", "other-ca"];
  const ec = ["server", "other-server"];
  const keys = [...rsa, ...ec];
  execFileSync(
    "sh",
    [
      "-c",
      'gen() { openssl genpkey "$@" 2>/dev/null; }; n=$1; shift; i=0; for k in "$@"; do i=$((i+1)); ' +
        'if [ $i -le $n ]; then gen -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$k" & ' +
        'else gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k" & fi; done; wait',
      "sh",
      String(rsa.length),
      ...keys.map((k) => path(`${k}.key`)),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  for (const k of keys) if (!existsSync(path(`${k}.key`))) throw new Error(`openssl made no key ${k}.key in ${dir}`);

  // Self-signed (a CA) or, with `caName`, signed by that CA in the same step: `req -x509 -CA`
  // (OpenSSL 3.0+) needs no CSR file.
  const certificate = (name: string, cn: string, ext: string, caName?: string): void =>
    openssl([
      "req",
      "-x509",
      "-config",
      config,
      "-extensions",
      ext,
      "-key",
      path(`${name}.key`),
      "-out",
      path(`${name}.pem`),
      "-subj",
      `/CN=${cn}`,
      "-days",
      "2",
      ...(caName === undefined ? [] : ["-CA", path(`${caName}.pem`), "-CAkey", path(`${caName}.key`)]),
    ]);
  const ca = (name: string, cn: string): void => certificate(name, cn, "ca_ext");
  const leaf = (name: string, cn: string, ext: string, caName: string): void => certificate(name, cn, ext, caName);

  ca("ca", "vmpools test CA");
  leaf("server", "localhost", "server_ext", "ca");
  leaf("client", CLIENT_COMMON_NAME, "client_ext", "ca");
  ca("other-ca", "unrelated test CA");
  leaf("other-server", "localhost", "server_ext", "other-ca");

  const read = (name: string): string => readFileSync(path(name), "utf8");
  let truststores = 0;
  return {
    dir,
    caPem: read("ca.pem"),
    caCertPath: path("ca.pem"),
    serverCertPem: read("server.pem"),
    serverCertPath: path("server.pem"),
    serverKeyPem: read("server.key"),
    serverKeyPath: path("server.key"),
    clientCertPem: read("client.pem"),
    clientCertPath: path("client.pem"),
    clientKeyPem: read("client.key"),
    clientKeyPath: path("client.key"),
    clientCommonName: CLIENT_COMMON_NAME,
    otherCaPem: read("other-ca.pem"),
    otherCaCertPath: path("other-ca.pem"),
    otherServerCertPem: read("other-server.pem"),
    otherServerCertPath: path("other-server.pem"),
    otherServerKeyPem: read("other-server.key"),
    otherServerKeyPath: path("other-server.key"),
    truststoreP12(password: string): string {
      const out = path(`truststore-${++truststores}.p12`);
      // The password reaches openssl through its environment, not its argv (visible in ps).
      execFileSync(
        "openssl",
        ["pkcs12", "-export", "-nokeys", "-in", path("ca.pem"), "-out", out, "-passout", "env:VMPOOLS_TEST_P12_PASS"],
        { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, VMPOOLS_TEST_P12_PASS: password } },
      );
      return out;
    },
  };
}
