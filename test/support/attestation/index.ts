// Loopback stand-ins for the attestation services vmpools talks to (OpenAttestation PollHosts, a
// Keylime verifier) and the test PKI they serve with.
export * from "./pki";
export * from "./openattestation-server";
export * from "./keylime-verifier";
