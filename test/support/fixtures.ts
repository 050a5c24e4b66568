import type { VmPoolProps } from "../../core";

/** A small valid pool; tests override one prop at a time. */
export function validProps(overrides: Partial<VmPoolProps> = {}): VmPoolProps {
  return {
    name: "MyPool-???",
    template: {
      name: "debian-12",
      version: 1,
      baseImagePath: "/var/lib/libvirt/images/debian-12.qcow2",
      diskSizeGiB: 10,
      memoryMiB: 1024,
      vcpus: 2,
    },
    size: 10,
    ...overrides,
  };
}
