// An app with one empty stack: what the CLI, Node, tsx and loading cdktf cost by themselves.
import { App, TerraformStack } from "cdktf";
import { timed } from "./timing";

timed(() => {
  const app = new App();
  new TerraformStack(app, "bench");
  return app;
});
