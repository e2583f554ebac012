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
// The KV cache type: F32 (fusiond's default; llama.cpp's is F16) unless LLAMACPP_CACHE_TYPE
// names another (f16, q8_0, ...: K and V alike), and no flash attention, so the references
// differ from fusiond only where the computation does.  llama.cpp reads a quantized V cache
// only in its flash attention, so a quantized type turns that on (on the CPU it dequantizes
// each V row to fp32 and accumulates in fp32; an F16 V, which it would accumulate in fp16
// there, keeps the plain path).
// This llama.cpp rotates Q, K and V by a Hadamard transform before a quantized cache
// stores them (for some head sizes), which fusiond does not: LLAMA_ATTN_ROT_DISABLE (read
// when the context is made) keeps the references to the plain quantization both share.
const env = process.env;
env.LLAMA_ATTN_ROT_DISABLE = env.LLAMA_ATTN_ROT_DISABLE ?? "1";
const cacheK = (env.LLAMACPP_CACHE_TYPE_K || env.LLAMACPP_CACHE_TYPE || "f32").toUpperCase();
const cacheV = (env.LLAMACPP_CACHE_TYPE_V || env.LLAMACPP_CACHE_TYPE || "f32").toUpperCase();
const flash = env.LLAMACPP_FLASH ? env.LLAMACPP_FLASH === "1"
                                 : !["F32", "F16", "BF16"].includes(cacheV);
// LoRA adapters: LLAMACPP_LORA="FILE:SCALE;FILE:SCALE" (llama.cpp applies each at its scale
// times alpha / rank).
const lora = (env.LLAMACPP_LORA || "").split(";").filter(x => x).map(x => {
    const at = x.lastIndexOf(":");
    return {filePath: x.slice(0, at), scale: Number(x.slice(at + 1))};
});
const ctx = await model.createContext({contextSize: 256, batchSize: 256, threads: 1,
    flashAttention: flash, experimentalKvCacheKeyType: cacheK,
    experimentalKvCacheValueType: cacheV,
    ...(lora.length ? {lora: {adapters: lora}} : {})});
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
