// `pulumi preview` / `pulumi up` in this folder (with a Pulumi installation's Node language host).
import { linuxDesktopPool } from "./program";

export = linuxDesktopPool;
