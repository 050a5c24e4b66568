// The example pool's props as plain data (no cdktf): the local demo on libvirt's test
// hypervisor deploys the same pool without loading the IaC layer.
import type { VmPoolProps } from "../core";

/** The example pool: also what the main command deploys on libvirt's test hypervisor. */
export const linuxDesktopPoolProps: VmPoolProps = {
  name: "MyPool-???",
  description: "Linux desktops for the support team",
  comment: "Rebuilt from template debian-12 each release",
  template: {
    name: "debian-12-desktop",
    version: 3,
    baseImagePath: "/var/lib/libvirt/images/debian-12-desktop-v3.qcow2",
    diskSizeGiB: 20,
    memoryMiB: 4096,
    vcpus: 2,
    operatingSystem: "linux",
  },
  optimizedFor: "desktop",
  size: 10,
  prestarted: 2,
  maxVmsPerUser: 1,
  type: "automatic",
  console: { spiceProxy: "http://spice-proxy.example.com:3128" },
  resourceAllocation: {
    disk: { storagePools: [{ name: "default" }, { name: "fast-ssd" }], autoSelectTarget: true },
  },
  initialRun: {
    cloudInit: {
      timeZone: "Europe/Berlin",
      users: [
        {
          name: "support",
          sudo: "ALL=(ALL) NOPASSWD:ALL",
          sshAuthorizedKeys: [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu8dYt1a9Q8XnQn2tqkU8ZcJ0pC8Cq6Qm4b8bq9n1Hx support@example.com",
          ],
        },
      ],
      packages: ["firefox-esr", "spice-vdagent"],
      runCommands: ["systemctl enable --now spice-vdagentd"],
    },
  },
};
