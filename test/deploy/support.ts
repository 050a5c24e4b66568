// Shared set-up for the deploy tests: a storage pool, a bridged libvirt network and a base image
// of the tiny guest's kind on qemu:///system, made by the test and removed after it.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { TerraformStack, type App } from "cdktf";
import { VmPool } from "../../engines/cdktf";
import type { VmPoolProps } from "../../core";
import type { DomainEvents } from "../../reconciler/driver/events";
import type { VirshDriver } from "../../reconciler/driver/libvirt-driver";
import { Reconciler, type Failure } from "../../reconciler/reconciler";
import type { StateStore } from "../../reconciler/store/store";
import type { ResourceChange } from "../support/terraform";
import { ensureGuest, guestCmdline, LIBVIRT_URI, virsh } from "../guest/guest";

export const BASE_MARKER = "BASE-CLEAN";

export interface Site {
  readonly id: string;
  readonly dir: string;
  readonly storagePool: string;
  readonly network: string;
  readonly baseImage: string;
  remove(): void;
}

/**
 * A dir storage pool and a network bridged onto a bridge of our own (libvirt's NAT networks
 * need iptables and dnsmasq, which these machines lack; a bridge-mode network needs neither).
 */
export function makeSite(prefix: string): Site {
  const id = `${prefix}${randomBytes(3).toString("hex")}`;
  const dir = path.join("/var/lib/libvirt/images", `vmpools-${id}`);
  const storagePool = `vmpools-${id}`;
  const network = `vmpools-${id}`;
  const bridge = `vmp${id}`.slice(0, 15);
  fs.mkdirSync(path.join(dir, "pool"), { recursive: true });
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(path.join(dir, "pool"), 0o755);
  const baseImage = path.join(dir, "base.raw");
  const sector = Buffer.alloc(1024 * 1024);
  sector.write(BASE_MARKER, "latin1");
  fs.writeFileSync(baseImage, sector, { mode: 0o644 });
  virsh("pool-create-as", "--name", storagePool, "--type", "dir", "--target", path.join(dir, "pool"));
  execFileSync("ip", ["link", "add", bridge, "type", "bridge"]);
  execFileSync("ip", ["link", "set", bridge, "up"]);
  const netXml = path.join(dir, "net.xml");
  fs.writeFileSync(
    netXml,
    `<network><name>${network}</name><forward mode='bridge'/><bridge name='${bridge}'/></network>`,
  );
  virsh("net-create", netXml);
  return {
    id,
    dir,
    storagePool,
    network,
    baseImage,
    remove() {
      const quiet = (...args: string[]) => {
        try {
          virsh(...args);
        } catch {
          /* already gone */
        }
      };
      for (const d of virsh("list", "--all", "--name")
        .split("\n")
        .map((l) => l.trim())) {
        if (!d.startsWith(prefixOf(id))) continue;
        quiet("destroy", d);
        quiet("undefine", d);
      }
      quiet("net-destroy", network);
      quiet("pool-destroy", storagePool);
      try {
        execFileSync("ip", ["link", "del", bridge]);
      } catch {
        /* already gone */
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A small pool on a site whose members are never booted (no kernel): enough for planning and applying. */
export function siteProps(site: Site, name: string, overrides: Partial<VmPoolProps> = {}): VmPoolProps {
  return {
    name,
    size: 1,
    template: {
      name: "t",
      version: 1,
      baseImagePath: site.baseImage,
      baseImageFormat: "raw",
      diskSizeGiB: 1,
      memoryMiB: 128,
      vcpus: 1,
      domainType: "qemu",
    },
    network: { network: site.network },
    resourceAllocation: { disk: { storagePools: [{ name: site.storagePool }] } },
    ...overrides,
  };
}

/**
 * A pool of the tiny real guest (test/guest) on the site, as the end-to-end deploy tests use it:
 * the guest has no boot loader; it boots the kernel, writes `marker` into sector 0 of its disk
 * and stays up.
 */
export function tinyGuestProps(
  site: Site,
  name: string,
  marker: string,
  overrides: Partial<VmPoolProps> = {},
): VmPoolProps {
  const guest = ensureGuest();
  return {
    name,
    description: "v1",
    size: 3,
    prestarted: 1,
    template: {
      name: "tiny",
      version: 1,
      baseImagePath: site.baseImage,
      baseImageFormat: "raw",
      diskSizeGiB: 1,
      memoryMiB: 192,
      vcpus: 1,
      domainType: "qemu",
      directKernelBoot: {
        kernelPath: guest.kernelPath,
        initrdPath: guest.initrdPath,
        cmdline: guestCmdline({ kind: "write-marker", text: marker }, { stay: true }),
      },
    },
    console: { spiceProxy: "http://proxy-one.vmpools.test:3128" },
    network: { network: site.network },
    resourceAllocation: { disk: { storagePools: [{ name: site.storagePool }] } },
    ...overrides,
  };
}

/** The policy edit of the deploy tests: every policy setting the seed names changes. */
export const POLICY_V2 = {
  prestarted: 2,
  maxVmsPerUser: 2,
  description: "v2",
  console: { spiceProxy: "http://proxy-two.vmpools.test:4000" },
} as const;

/**
 * The reconciler a deploy test hands the pool to (not started): quick retries and resyncs, a fixed
 * console host, its failures pushed to `failures`.
 */
export function reconcilerFor(o: {
  readonly driver: VirshDriver;
  readonly store: StateStore;
  readonly events: DomainEvents;
  readonly pool: string;
  readonly failures: Failure[];
}): Reconciler {
  const reconciler = new Reconciler({
    driver: o.driver,
    store: o.store,
    events: o.events,
    retry: { maxAttempts: 3, baseDelayMs: 100 },
    resyncIntervalMs: 500,
    shutdownTimeoutMs: 1000,
    consoleHost: "console.vmpools.test",
    onlyPools: [o.pool],
  });
  reconciler.on("failure", (f) => o.failures.push(f));
  return reconciler;
}

/** Member names of a site's pools start with this. */
export const prefixOf = (id: string) => `T${id}`;

export const stackWith =
  (...pools: readonly VmPoolProps[]) =>
  (app: App, id: string): TerraformStack => {
    const stack = new TerraformStack(app, id);
    pools.forEach((props, i) => new VmPool(stack, `Pool${i + 1}`, props));
    return stack;
  };

const MEMBER_TYPES = new Set(["libvirt_domain", "libvirt_volume"]);
const isPolicyVolume = (c: ResourceChange) => c.type === "libvirt_volume" && /^[^.]*_policy_host_\w+$/.test(c.name);

/**
 * Planned changes to existing member resources (domains, system and media volumes) other than
 * none at all. Creates (new members) and deletes (a shrink) are reported by kind, so a test
 * states exactly which it expects; an update or a replacement of a member is always listed.
 */
export function memberChanges(changes: readonly ResourceChange[]): string[] {
  return changes
    .filter((c) => MEMBER_TYPES.has(c.type) && !isPolicyVolume(c))
    .filter((c) => !(c.actions.length === 1 && c.actions[0] === "no-op"))
    .map((c) => `${c.actions.join("+")} ${c.address}`)
    .sort();
}

/** Planned changes to the policy volumes and their revision. */
export function policyChanges(changes: readonly ResourceChange[]): string[] {
  return changes
    .filter((c) => isPolicyVolume(c) || c.type === "terraform_data")
    .filter((c) => !(c.actions.length === 1 && c.actions[0] === "no-op"))
    .map((c) => `${c.actions.join("+")} ${c.address}`)
    .sort();
}

/** Identity facts that must survive a deploy untouched. */
export function domainFacts(name: string): { uuid: string; mac: string } {
  const mac = /([0-9a-f]{2}(?::[0-9a-f]{2}){5})/.exec(virsh("domiflist", name))?.[1] ?? "";
  return { uuid: virsh("domuuid", name), mac };
}

/**
 * A running domain's state and its runtime id: libvirt gives a domain a new id each time it
 * starts, so an unchanged id proves it was not stopped and started again in between.
 */
export function runtimeFacts(name: string): { state: string; id: string } {
  return { state: virsh("domstate", name), id: virsh("domid", name) };
}

export { LIBVIRT_URI };
