// llamacpp-logits.mjs: prints llama.cpp's next-token logits after each of the given token ids
// (one batch from position 0, no BOS added), through node-llama-cpp's prebuilt CPU binaries.
// It writes the references test_llamacpp_ref compares fusiond with; make-refs.sh runs it.
// usage: node llamacpp-logits.mjs MODEL.gguf ID...
import {getLlama} from "node-llama-cpp";

const [modelPath, ...idArgs] = process.argv.slice(2);
if (!modelPath || idArgs.length === 0) {
    console.error("usage: node llamacpp-logits.mjs MODEL.gguf ID...");
    process.exit(2);
}
const ids = idArgs.map(Number);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const n = model.tokens.size ?? undefined;
// F32 KV cache (llama.cpp defaults to F16, fusiond keeps F32) and no flash attention, so the
// references differ from fusiond only where the computation does
const ctx = await model.createContext({contextSize: 256, batchSize: 256, threads: 1,
    flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const seq = ctx.getSequence();
const out = await seq.controlledEvaluate(ids.map(t => [t, {generateNext: {logits: true}}]));
for (let i = 0; i < ids.length; i++) {
    const l = out[i]?.next?.logits;
    if (!l)
        throw new Error(`no logits after position ${i}`);
    const row = new Array(l.size);
    for (const [tok, v] of l)
        row[tok] = v;
    if (n !== undefined && row.length !== n)
        throw new Error(`position ${i}: ${row.length} logits, vocabulary ${n}`);
    console.log(`logits ${i} ${row.length}`);
    console.log(row.map(v => v.toPrecision(7)).join(" "));
}
await ctx.dispose();
await model.dispose();
