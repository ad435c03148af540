import { ensureImages } from '../images.js';
let t = Date.now();
const a = await ensureImages(1280, 960, undefined, console.log); console.log(Date.now() - t, a.files.length); t = Date.now();
const b = await ensureImages(320, 240, undefined, console.log); console.log(Date.now() - t, b.files.length);
