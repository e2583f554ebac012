// llamacpp-tokens.mjs: prints llama.cpp's token ids for each given text (hex-encoded UTF-8),
// without and with special-token parsing and with no BOS added, through node-llama-cpp's
// prebuilt CPU binaries (the vocabulary only).  It writes the references test_llamacpp_ref's
// tokenizer check compares fusiond with; make-refs.sh runs it.
// usage: node llamacpp-tokens.mjs MODEL.gguf HEX...
import {getLlama} from "node-llama-cpp";

const [modelPath, ...hexArgs] = process.argv.slice(2);
if (!modelPath || hexArgs.length === 0) {
    console.error("usage: node llamacpp-tokens.mjs MODEL.gguf HEX...");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath, vocabOnly: true});
console.log(`bos ${model.tokens.bos ?? -1} eos ${model.tokens.eos ?? -1}`);
for (const hex of hexArgs) {
    const text = Buffer.from(hex === "-" ? "" : hex, "hex").toString("utf8");
    for (const special of [false, true]) {
        const ids = model.tokenize(text, special);
        console.log(`tokens ${special ? 1 : 0} ${hex} ${ids.length} ${ids.join(" ")}`.trimEnd());
    }
}
await model.dispose();
