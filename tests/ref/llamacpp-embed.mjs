// llamacpp-embed.mjs: prints llama.cpp's pooled output of an encoder (arch bert: WordPiece or
// XLM-RoBERTa's unigram vocabulary) for each given input of token ids, through
// node-llama-cpp's prebuilt CPU binaries: with MODE embd the embedding of the file's
// pooling_type (mean, CLS or last; raw, not normalized: llama_get_embeddings_seq), with MODE
// rank the classification head's first output (llama.cpp's rank pooling, a logit: not the
// sigmoid node-llama-cpp's LlamaRankingContext would apply).  The ids go in as they are (no
// [CLS]/[SEP] added; llama.cpp gives every token type 0), one context per input, 1 thread.
// It writes the references test_llamacpp_bert compares fusiond with; make-refs.sh runs it.
// usage: node llamacpp-embed.mjs MODEL.gguf embd|rank ID,ID,... [ID,ID,... ...]
import {getLlama} from "node-llama-cpp";

const [modelPath, mode, ...inputs] = process.argv.slice(2);
if (!modelPath || !["embd", "rank"].includes(mode) || inputs.length === 0) {
    console.error("usage: node llamacpp-embed.mjs MODEL.gguf embd|rank ID,ID,... ...");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
// node-llama-cpp's own embedding and ranking contexts are these (LlamaEmbeddingContext,
// LlamaRankingContext) with their token handling around them; this one takes the ids as
// they are.
// No flash attention (llama.cpp's CPU one multiplies in fp16), as fusiond and
// llamacpp-logits.mjs.
const ctx = await model.createContext({contextSize: 128, batchSize: 128, threads: 1,
    flashAttention: false, _embeddings: true, _ranking: mode === "rank"});
const seq = ctx.getSequence();
for (const [k, input] of inputs.entries()) {
    const ids = input.split(",").map(Number);
    await seq.eraseContextTokenRanges([{start: 0, end: seq.nextTokenIndex}]);
    for await (const _ of seq.evaluate(ids, {_noSampling: true}))
        break;
    const v = Array.from(ctx._ctx.getEmbedding(ids.length, mode === "rank" ? 1 : 0));
    if (v.length === 0 || v.some(x => !Number.isFinite(x)))
        throw new Error(`input ${k}: no ${mode} output`);
    console.log(`${mode} ${k} ${ids.length} ${ids.join(" ")}`);
    console.log(`${v.length} ${v.map(x => x.toPrecision(8)).join(" ")}`);
}
await ctx.dispose();
await model.dispose();
