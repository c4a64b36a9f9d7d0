// Text imports of committed PTX (import x from "…/file.ptx" with { type: "text" }).
declare module "*.ptx" {
  const text: string;
  export default text;
}
