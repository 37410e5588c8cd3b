// fanfare.js as an ES module: `import { connect } from "/fanfare.mjs"`.
// Importing the classic script runs it once and leaves its API on globalThis.Fanfare.
import "./fanfare.js";

const Fanfare = globalThis.Fanfare;
export const { connect, Client, matches, text } = Fanfare;
export default Fanfare;
