# tests/local.mk: one Check program per module (tests/test_<module>.c) and black-box scripts.
EXTRA_DIST += tests/testutil.h tests/gen_collect.h

check_PROGRAMS += tests/test_common
tests_test_common_SOURCES = tests/test_common.c
tests_test_common_CFLAGS = $(TEST_CFLAGS)
tests_test_common_LDADD = $(TEST_LIBS)
TESTS += tests/test_common

check_PROGRAMS += tests/test_quants
tests_test_quants_SOURCES = tests/test_quants.c
tests_test_quants_CFLAGS = $(TEST_CFLAGS)
tests_test_quants_LDADD = $(TEST_LIBS)
TESTS += tests/test_quants

check_PROGRAMS += tests/test_log
tests_test_log_SOURCES = tests/test_log.c
tests_test_log_CFLAGS = $(TEST_CFLAGS)
tests_test_log_LDADD = $(TEST_LIBS)
TESTS += tests/test_log

check_PROGRAMS += tests/test_cpu_backend
tests_test_cpu_backend_SOURCES = tests/test_cpu_backend.c
tests_test_cpu_backend_CFLAGS = $(TEST_CFLAGS)
tests_test_cpu_backend_LDADD = $(TEST_LIBS)
TESTS += tests/test_cpu_backend

# test_cpu_pool builds backends/cpu/pool.c in, with a test hook: the library's pool is not used.
check_PROGRAMS += tests/test_cpu_pool
tests_test_cpu_pool_SOURCES = tests/test_cpu_pool.c
tests_test_cpu_pool_CFLAGS = $(TEST_CFLAGS)
tests_test_cpu_pool_LDADD = $(TEST_LIBS)
TESTS += tests/test_cpu_pool

check_PROGRAMS += tests/test_config
tests_test_config_SOURCES = tests/test_config.c
tests_test_config_CFLAGS = $(TEST_CFLAGS)
tests_test_config_LDADD = $(DAEMON_LIBS) $(TEST_LIBS)
TESTS += tests/test_config

check_PROGRAMS += tests/test_notify
tests_test_notify_SOURCES = tests/test_notify.c
tests_test_notify_CFLAGS = $(TEST_CFLAGS)
tests_test_notify_LDADD = $(DAEMON_LIBS) $(TEST_LIBS)
TESTS += tests/test_notify

# Black-box daemon tests: the real fusiond, its flags, signals, sd_notify and unit.
EXTRA_DIST += tests/daemon_harness.py
EXTRA_DIST += tests/hf_jinja.py
dist_check_SCRIPTS += tests/daemon_config.py tests/daemon_signals.py tests/daemon_sandbox.py \
	tests/daemon_unit.sh tests/daemon_tls.py
TESTS += tests/daemon_config.py tests/daemon_signals.py tests/daemon_sandbox.py tests/daemon_unit.sh \
	tests/daemon_tls.py

check_PROGRAMS += tests/test_request
tests_test_request_SOURCES = tests/test_request.c
tests_test_request_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_request_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_request
FUZZ_TARGETS += tests/fuzz/fuzz_request.c
EXTRA_DIST += tests/fuzz/fuzz_request.c tests/fuzz/fuzz.h

check_PROGRAMS += tests/test_fusion
tests_test_fusion_SOURCES = tests/test_fusion.c
tests_test_fusion_CFLAGS = $(TEST_CFLAGS)
tests_test_fusion_LDADD = $(TEST_LIBS)
TESTS += tests/test_fusion

check_PROGRAMS += tests/test_metrics
tests_test_metrics_SOURCES = tests/test_metrics.c
tests_test_metrics_CFLAGS = $(TEST_CFLAGS)
tests_test_metrics_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_metrics

check_PROGRAMS += tests/test_infill
tests_test_infill_SOURCES = tests/test_infill.c
tests_test_infill_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_infill_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_infill

check_PROGRAMS += tests/test_openai
tests_test_openai_SOURCES = tests/test_openai.c
tests_test_openai_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_openai_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_openai

# test_http drives the real HTTP layer against tests/fake_engine.c (linked before the
# libraries, so its engine and tokenizer definitions are the ones used).
check_PROGRAMS += tests/test_http
tests_test_http_SOURCES = tests/test_http.c tests/fake_engine.c tests/fake_engine.h
tests_test_http_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS) $(UV_CFLAGS)
tests_test_http_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_http

# Black-box: the real fusiond on a loopback port with stories260K (python3, stdlib only).
EXTRA_DIST += tests/model_test.sh
dist_check_SCRIPTS += tests/test_server.sh
EXTRA_DIST += tests/test_server.py
TESTS += tests/test_server.sh
dist_check_SCRIPTS += tests/test_prompt_logprobs.sh
EXTRA_DIST += tests/test_prompt_logprobs.py
TESTS += tests/test_prompt_logprobs.sh
dist_check_SCRIPTS += tests/test_embeddings.sh
dist_check_SCRIPTS += tests/test_bert_server.py
TESTS += tests/test_bert_server.py
EXTRA_DIST += tests/test_embeddings.py
TESTS += tests/test_embeddings.sh
dist_check_SCRIPTS += tests/test_spec_server.sh
EXTRA_DIST += tests/test_spec_server.py
TESTS += tests/test_spec_server.sh

check_PROGRAMS += tests/test_gguf
tests_test_gguf_SOURCES = tests/test_gguf.c
tests_test_gguf_CFLAGS = $(TEST_CFLAGS)
tests_test_gguf_LDADD = $(TEST_LIBS)
TESTS += tests/test_gguf

check_PROGRAMS += tests/test_model
tests_test_model_SOURCES = tests/test_model.c
tests_test_model_CFLAGS = $(TEST_CFLAGS)
tests_test_model_LDADD = $(TEST_LIBS)
TESTS += tests/test_model

check_PROGRAMS += tests/test_bert
tests_test_bert_SOURCES = tests/test_bert.c
tests_test_bert_CFLAGS = $(TEST_CFLAGS)
tests_test_bert_LDADD = $(TEST_LIBS)
TESTS += tests/test_bert

check_PROGRAMS += tests/test_gptoss
tests_test_gptoss_SOURCES = tests/test_gptoss.c
tests_test_gptoss_CFLAGS = $(TEST_CFLAGS)
tests_test_gptoss_LDADD = $(TEST_LIBS)
TESTS += tests/test_gptoss

check_PROGRAMS += tests/test_grammar
tests_test_grammar_SOURCES = tests/test_grammar.c
tests_test_grammar_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_grammar_LDADD = $(TEST_LIBS) $(CJSON_LIBS)
TESTS += tests/test_grammar

check_PROGRAMS += tests/test_schema
tests_test_schema_SOURCES = tests/test_schema.c
tests_test_schema_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_schema_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_schema
FUZZ_TARGETS += tests/fuzz/fuzz_schema.c
EXTRA_DIST += tests/fuzz/fuzz_schema.c tests/fuzz/fuzz_schema.dict tests/fuzz/corpus/fuzz_schema

check_PROGRAMS += tests/test_sampler
tests_test_sampler_SOURCES = tests/test_sampler.c
tests_test_sampler_CFLAGS = $(TEST_CFLAGS)
tests_test_sampler_LDADD = $(TEST_LIBS)
TESTS += tests/test_sampler

check_PROGRAMS += tests/test_tokenizer
tests_test_tokenizer_SOURCES = tests/test_tokenizer.c
tests_test_tokenizer_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_tokenizer_LDADD = $(TEST_LIBS) $(CJSON_LIBS)
TESTS += tests/test_tokenizer

check_PROGRAMS += tests/test_wordpiece
tests_test_wordpiece_SOURCES = tests/test_wordpiece.c
tests_test_wordpiece_CFLAGS = $(TEST_CFLAGS)
tests_test_wordpiece_LDADD = $(TEST_LIBS)
TESTS += tests/test_wordpiece

check_PROGRAMS += tests/test_ugm
tests_test_ugm_SOURCES = tests/test_ugm.c
tests_test_ugm_CFLAGS = $(TEST_CFLAGS)
tests_test_ugm_LDADD = $(TEST_LIBS)
TESTS += tests/test_ugm
FUZZ_TARGETS += tests/fuzz/fuzz_tokenizer.c
EXTRA_DIST += tests/fuzz/fuzz_tokenizer.c

dist_check_SCRIPTS += tests/test_fusion_cli.py
TESTS += tests/test_fusion_cli.py
dist_check_SCRIPTS += tests/test_cli_sampling.py
TESTS += tests/test_cli_sampling.py

check_PROGRAMS += tests/test_engine
tests_test_engine_SOURCES = tests/test_engine.c
tests_test_engine_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_engine_LDADD = $(TEST_LIBS) $(CJSON_LIBS)
TESTS += tests/test_engine

check_PROGRAMS += tests/test_spec
tests_test_spec_SOURCES = tests/test_spec.c
tests_test_spec_CFLAGS = $(TEST_CFLAGS)
tests_test_spec_LDADD = $(TEST_LIBS)
TESTS += tests/test_spec

check_PROGRAMS += tests/test_jinja
tests_test_jinja_SOURCES = tests/test_jinja.c
tests_test_jinja_CFLAGS = $(TEST_CFLAGS)
tests_test_jinja_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_jinja

check_PROGRAMS += tests/test_chat
tests_test_chat_SOURCES = tests/test_chat.c
tests_test_chat_CFLAGS = $(TEST_CFLAGS)
tests_test_chat_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_chat
FUZZ_TARGETS += tests/fuzz/fuzz_chat.c
EXTRA_DIST += tests/fuzz/fuzz_chat.c

# libFuzzer target for the GGUF reader (make fuzz); seeds are small generated files.
FUZZ_TARGETS += tests/fuzz/fuzz_gguf.c
EXTRA_DIST += tests/fuzz/fuzz_gguf.c tests/fuzz/corpus/fuzz_gguf

check_PROGRAMS += tests/test_gguf_write
tests_test_gguf_write_SOURCES = tests/test_gguf_write.c
tests_test_gguf_write_CFLAGS = $(TEST_CFLAGS)
tests_test_gguf_write_LDADD = $(TEST_LIBS)
TESTS += tests/test_gguf_write

# Writes the fuzz_gguf seed corpus (built with the tests, run by hand).
check_PROGRAMS += tests/fuzz/gen_seeds_gguf
tests_fuzz_gen_seeds_gguf_SOURCES = tests/fuzz/gen_seeds_gguf.c
tests_fuzz_gen_seeds_gguf_LDADD = $(FD_LIBS)

dist_check_SCRIPTS += tests/test_gguf_cli.sh
TESTS += tests/test_gguf_cli.sh

check_PROGRAMS += tests/test_demo_model
tests_test_demo_model_SOURCES = tests/test_demo_model.c
tests_test_demo_model_CFLAGS = $(TEST_CFLAGS)
tests_test_demo_model_LDADD = $(TEST_LIBS)
TESTS += tests/test_demo_model
EXTRA_DIST += tests/data/demo-tok.txt tests/data/demo-logits.txt tests/data/demo-greedy.txt

# llama.cpp's pooled outputs and token ids for random BERT-family encoders (make-refs.sh)
check_PROGRAMS += tests/test_llamacpp_bert
tests_test_llamacpp_bert_SOURCES = tests/test_llamacpp_bert.c
tests_test_llamacpp_bert_CFLAGS = $(TEST_CFLAGS)
tests_test_llamacpp_bert_LDADD = $(TEST_LIBS)
TESTS += tests/test_llamacpp_bert
EXTRA_DIST += tests/data/llamacpp-bert-mean-f32.txt tests/data/llamacpp-bert-cls-f32.txt \
	tests/data/llamacpp-bert-last-f32.txt tests/data/llamacpp-bert-mean-q8_0.txt \
	tests/data/llamacpp-bert-cls-f16.txt tests/data/llamacpp-xlmr-cls-f32.txt \
	tests/ref/llamacpp-embed.mjs

# llama.cpp's logits for random models of each architecture and type (tests/ref/make-refs.sh)
check_PROGRAMS += tests/test_llamacpp_ref
tests_test_llamacpp_ref_SOURCES = tests/test_llamacpp_ref.c
tests_test_llamacpp_ref_CFLAGS = $(TEST_CFLAGS)
tests_test_llamacpp_ref_LDADD = $(TEST_LIBS)
TESTS += tests/test_llamacpp_ref
EXTRA_DIST += tests/data/llamacpp-gemma-f32.txt tests/data/llamacpp-gemma-q4_k_m.txt \
	tests/data/llamacpp-gemma2-f32.txt tests/data/llamacpp-gemma2-q4_k_m.txt \
	tests/data/llamacpp-gemma2-q8_0.txt tests/data/llamacpp-gemma3-f32.txt \
	tests/data/llamacpp-gemma3-q4_k_m.txt tests/data/llamacpp-gemma3-q8_0.txt \
	tests/data/llamacpp-gemma3-ropescale-f32.txt tests/data/llamacpp-llama-bf16.txt \
	tests/data/llamacpp-llama-f16.txt tests/data/llamacpp-llama-f32.txt \
	tests/data/llamacpp-llama-hd64-f32-kv-f16.txt \
	tests/data/llamacpp-llama-hd64-f32-kv-q8_0.txt tests/data/llamacpp-llama-hd64-f32.txt \
	tests/data/llamacpp-llama-q4_0.txt tests/data/llamacpp-llama-q4_k_m.txt \
	tests/data/llamacpp-llama-q5_k_m.txt tests/data/llamacpp-llama-q6_k.txt \
	tests/data/llamacpp-llama-q8_0.txt tests/data/llamacpp-llama-yarn-f32.txt \
	tests/data/llamacpp-llama3-ropefreqs-f32.txt \
	tests/data/llamacpp-llama3-ropefreqs-q4_k_m.txt tests/data/llamacpp-mixtral-f32.txt \
	tests/data/llamacpp-mixtral-q4_0.txt tests/data/llamacpp-olmoe-f32.txt \
	tests/data/llamacpp-olmoe-q4_k_m.txt tests/data/llamacpp-phi3-f32.txt \
	tests/data/llamacpp-phi3-longrope-long-f32.txt \
	tests/data/llamacpp-phi3-longrope-short-f32.txt tests/data/llamacpp-phi3-q4_k_m.txt \
	tests/data/llamacpp-qwen2-f32.txt tests/data/llamacpp-qwen2-yarn-f32.txt \
	tests/data/llamacpp-qwen2moe-f32.txt \
	tests/data/llamacpp-qwen2moe-q4_k_m.txt tests/data/llamacpp-qwen3-f32-kv-f16.txt \
	tests/data/llamacpp-qwen3-f32-kv-q8_0.txt tests/data/llamacpp-qwen3-f32.txt \
	tests/data/llamacpp-qwen3-q4_k_m.txt tests/data/llamacpp-qwen3-yarn-af-f32.txt \
	tests/data/llamacpp-qwen3-yarn-f32.txt \
	tests/data/llamacpp-qwen3-yarn-q8_0.txt tests/data/llamacpp-qwen3moe-f32.txt \
	tests/data/llamacpp-qwen3moe-q4_k_m.txt tests/data/llamacpp-qwen3moe-q8_0.txt \
	tests/data/llamacpp-tok-gemma.txt tests/ref/llamacpp-logits.mjs \
	tests/ref/llamacpp-tokens.mjs tests/ref/make-refs.sh tests/ref/package.json \
	tests/ref/check-types.sh tests/ref/gguf-types.py tests/ref/quantize.c
# the types added on 2026-11-29 and gpt-oss
EXTRA_DIST += tests/data/llamacpp-llama-q4_1.txt tests/data/llamacpp-llama-q5_0.txt \
	tests/data/llamacpp-llama-q5_1.txt tests/data/llamacpp-llama-q2_k.txt \
	tests/data/llamacpp-llama-q3_k.txt tests/data/llamacpp-llama-iq4_nl.txt \
	tests/data/llamacpp-llama-iq4_xs.txt tests/data/llamacpp-llama-iq4_xs_mix.txt \
	tests/data/llamacpp-llama-mxfp4.txt tests/data/llamacpp-qwen3moe-mxfp4_moe.txt \
	tests/data/llamacpp-gpt-oss-f32.txt tests/data/llamacpp-gpt-oss-mxfp4_moe.txt
# LoRA adapters applied by llama.cpp (tests/ref/make-refs.sh's LORAS)
EXTRA_DIST += tests/data/llamacpp-lora-llama-f32.txt \
	tests/data/llamacpp-lora-llama-f32-scaled.txt tests/data/llamacpp-lora-llama-q4_k_m.txt \
	tests/data/llamacpp-lora-llama-q8_0.txt tests/data/llamacpp-lora-phi3-f32.txt \
	tests/data/llamacpp-lora-qwen2-f32.txt

check_PROGRAMS += tests/test_corsair
tests_test_corsair_SOURCES = tests/test_corsair.c
tests_test_corsair_CFLAGS = $(TEST_CFLAGS)
tests_test_corsair_LDADD = $(TEST_LIBS)
TESTS += tests/test_corsair

# libFuzzer targets of the reliability work (make fuzz; .ci/run runs each briefly): model
# loading and streamed text; gen_seeds_model writes fuzz_model's seeds.  fuzz_request is
# registered with test_request above; its seeds and dictionary are here, with seeds for
# fuzz_tokenizer and fuzz_chat.
FUZZ_TARGETS += tests/fuzz/fuzz_model.c
EXTRA_DIST += tests/fuzz/fuzz_model.c tests/fuzz/corpus/fuzz_model
EXTRA_DIST += tests/fuzz/fuzz_request.dict tests/fuzz/corpus/fuzz_request
EXTRA_DIST += tests/fuzz/corpus/fuzz_tokenizer tests/fuzz/corpus/fuzz_chat
FUZZ_TARGETS += tests/fuzz/fuzz_stream.c
EXTRA_DIST += tests/fuzz/fuzz_stream.c tests/fuzz/corpus/fuzz_stream
check_PROGRAMS += tests/fuzz/gen_seeds_model
tests_fuzz_gen_seeds_model_SOURCES = tests/fuzz/gen_seeds_model.c
tests_fuzz_gen_seeds_model_LDADD = $(FD_LIBS)

# Black-box reliability tests on loopback (python3, stdlib only; tests/loopback.py starts
# fusiond): the bad-input battery, and the load and fault test (RELY_LOAD_LONG=1: long mode).
EXTRA_DIST += tests/loopback.py
dist_doc_DATA += docs/reliability.md
dist_check_SCRIPTS += tests/test_badinput.py tests/test_load.py
TESTS += tests/test_badinput.py tests/test_load.py

# test_cuda needs a GPU (skips with 77 without one); built only with --with-cuda.
if HAVE_CUDA
check_PROGRAMS += tests/test_cuda
tests_test_cuda_SOURCES = tests/test_cuda.c
tests_test_cuda_CFLAGS = $(TEST_CFLAGS)
tests_test_cuda_LDADD = $(TEST_LIBS)
TESTS += tests/test_cuda
endif

# make check-valgrind: Check suites under valgrind memcheck (tests/valgrind.sh); the default
# set is what fits CI's time (.ci/run: about a minute); VALGRIND_SUITES="tests/test_x ..."
# picks others, VALGRIND_ALL=1 runs every suite (about 26 minutes; docs/reliability.md).
VALGRIND_SUITES = tests/test_common tests/test_chat tests/test_jinja tests/test_config tests/test_notify \
	tests/test_openai tests/test_request tests/test_metrics tests/test_http \
	tests/test_tokenizer tests/test_quants tests/test_gguf tests/test_toolcall \
	tests/test_responses tests/test_anthropic
VALGRIND_SUITES += tests/test_ugm
EXTRA_DIST += tests/valgrind.sh
check-valgrind: $(check_PROGRAMS)
	@$(AM_TESTS_ENVIRONMENT) $(SHELL) $(top_srcdir)/tests/valgrind.sh \
	  $(if $(VALGRIND_ALL),,$(VALGRIND_SUITES))
.PHONY: check-valgrind

# Black-box: the official OpenAI Node SDK (npm `openai`, pinned in tests/sdk/package-lock.json)
# against the real fusiond with the demo model.  Skips without node or the SDK (install it:
# cd tests/sdk && npm ci) unless FUSIOND_REQUIRE_SDK=1 (CI's make check).
dist_check_SCRIPTS += tests/test_sdk.py
EXTRA_DIST += tests/sdk/check.mjs tests/sdk/package.json tests/sdk/package-lock.json
EXTRA_DIST += tests/sdk/anthropic.mjs
TESTS += tests/test_sdk.py

# Tool calling: server/chat.c against the real templates rendered by jinja2 (python3-jinja2),
# through tests/chat_render.  Skips without jinja2 unless FUSIOND_REQUIRE_JINJA=1 (CI).
check_PROGRAMS += tests/chat_render
tests_chat_render_SOURCES = tests/chat_render.c
tests_chat_render_CFLAGS = $(AM_CFLAGS) $(CJSON_CFLAGS)
tests_chat_render_LDADD = $(SRV_LIBS)
dist_check_SCRIPTS += tests/test_chat_jinja.py
TESTS += tests/test_chat_jinja.py
# An assistant prefill per family against the real templates' rendering cut after it.
dist_check_SCRIPTS += tests/test_chat_prefill.py
TESTS += tests/test_chat_prefill.py
EXTRA_DIST += tests/data/chat-templates/Qwen-Qwen3-0.6B.jinja tests/data/chat-templates/README.md
EXTRA_DIST += tests/data/chat-templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja
EXTRA_DIST += tests/data/chat-templates/unsloth-mistral-Devstral-Small-2507.jinja
EXTRA_DIST += tests/data/chat-templates/ibm-granite-granite-3.3-2B-Instruct.jinja
EXTRA_DIST += tests/data/chat-templates/microsoft-Phi-4-mini-instruct.jinja
EXTRA_DIST += tests/data/chat-templates/openai-gpt-oss-120b.jinja

# The Jinja interpreter (server/jinja.c) against python3-jinja2 on every real template, through
# tests/jinja_render.  Skips without jinja2 unless FUSIOND_REQUIRE_JINJA=1 (CI).
check_PROGRAMS += tests/jinja_render
tests_jinja_render_SOURCES = tests/jinja_render.c
tests_jinja_render_LDADD = $(SRV_LIBS)
dist_check_SCRIPTS += tests/test_jinja_templates.py
TESTS += tests/test_jinja_templates.py
# The same interpreter in the daemon: unknown templates, --chat-template-file, --jinja.
dist_check_SCRIPTS += tests/test_jinja_server.py
TESTS += tests/test_jinja_server.py
EXTRA_DIST += tests/data/chat-templates/deepseek-ai-DeepSeek-V3.1.jinja
EXTRA_DIST += tests/data/chat-templates/zai-org-GLM-4.6.jinja
EXTRA_DIST += tests/data/chat-templates/moonshotai-Kimi-K2.jinja
EXTRA_DIST += tests/data/chat-templates/nvidia-Llama-3_3-Nemotron-Super-49B-v1_5.jinja
EXTRA_DIST += tests/data/chat-templates/unsloth-MiniMax-M2.jinja

# The gpt-4o pre-split against llama.cpp's regex run by Python's re (tests/split_render prints
# fusiond's splits).
check_PROGRAMS += tests/split_render
tests_split_render_SOURCES = tests/split_render.c
tests_split_render_CFLAGS = $(AM_CFLAGS)
tests_split_render_LDADD = $(FD_LIBS)
dist_check_SCRIPTS += tests/test_pretok_regex.py
TESTS += tests/test_pretok_regex.py

# The unigram (t5) tokenizer against SentencePiece itself (python3-sentencepiece), through
# tests/ugm_render.  Skips without it unless FUSIOND_REQUIRE_SENTENCEPIECE=1 (CI).
check_PROGRAMS += tests/ugm_render
tests_ugm_render_SOURCES = tests/ugm_render.c
tests_ugm_render_CFLAGS = $(AM_CFLAGS)
tests_ugm_render_LDADD = $(FD_LIBS)
dist_check_SCRIPTS += tests/test_ugm_spm.py
TESTS += tests/test_ugm_spm.py

check_PROGRAMS += tests/test_toolcall
tests_test_toolcall_SOURCES = tests/test_toolcall.c
tests_test_toolcall_CFLAGS = $(TEST_CFLAGS)
tests_test_toolcall_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_toolcall
FUZZ_TARGETS += tests/fuzz/fuzz_toolcall.c
EXTRA_DIST += tests/fuzz/fuzz_toolcall.c tests/fuzz/corpus/fuzz_toolcall

# Black-box function calling: the real fusiond with a stories260K copy that carries Qwen 2.5's
# template (and call text in a few tokens, picked by logit_bias), then as llama3.1 and mistral.
dist_check_SCRIPTS += tests/test_tools_server.py
EXTRA_DIST += tests/gguf_copy.py
TESTS += tests/test_tools_server.py
# The same for templates of no known family: llama-server's generic JSON format (its grammar
# holding a random model to well-formed calls) and Hermes-style <tool_call> templates.
dist_check_SCRIPTS += tests/test_jinja_tools_server.py
TESTS += tests/test_jinja_tools_server.py

# The Responses API (/v1/responses) end to end: the real fusiond with stories260K (and a
# Qwen-template copy for function calling), against the chat endpoint's answers.
dist_check_SCRIPTS += tests/test_responses.py
TESTS += tests/test_responses.py
check_PROGRAMS += tests/test_responses
tests_test_responses_SOURCES = tests/test_responses.c
tests_test_responses_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_responses_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_responses
FUZZ_TARGETS += tests/fuzz/fuzz_responses.c
EXTRA_DIST += tests/fuzz/fuzz_responses.c tests/fuzz/fuzz_responses.dict tests/fuzz/corpus/fuzz_responses

# Anthropic's Messages API (/v1/messages): server/anthropic.c alone, then end to end with the
# real fusiond (stories260K, and a Qwen-template copy for tool use) against the chat answers.
check_PROGRAMS += tests/test_anthropic
tests_test_anthropic_SOURCES = tests/test_anthropic.c
tests_test_anthropic_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_anthropic_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_anthropic
dist_check_SCRIPTS += tests/test_anthropic.py
TESTS += tests/test_anthropic.py
FUZZ_TARGETS += tests/fuzz/fuzz_anthropic.c
EXTRA_DIST += tests/fuzz/fuzz_anthropic.c tests/fuzz/corpus/fuzz_anthropic

# Reasoning (<think>) split from the answer: server/reasoning.c on given texts and cuts.
check_PROGRAMS += tests/test_reasoning
tests_test_reasoning_SOURCES = tests/test_reasoning.c
tests_test_reasoning_CFLAGS = $(TEST_CFLAGS)
tests_test_reasoning_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_reasoning
# Black-box: the reasoning split through the real fusiond (a stories260K copy carrying Qwen3's
# template, think blocks in a few tokens picked by logit_bias).
dist_check_SCRIPTS += tests/test_reasoning_server.py
TESTS += tests/test_reasoning_server.py
# An assistant prefill and the reasoning budget against /completion's greedy continuations.
dist_check_SCRIPTS += tests/test_prefill_server.py
TESTS += tests/test_prefill_server.py
dist_check_SCRIPTS += tests/test_harmony_server.py
TESTS += tests/test_harmony_server.py
# The deepseek-r1 chat format through the daemon: starting inside the think block.
dist_check_SCRIPTS += tests/test_r1_server.py
TESTS += tests/test_r1_server.py
# Fill-in-the-middle through the daemon: /infill and OpenAI's suffix on stories260K copies
# given FIM tokens (by text, and by GGUF keys).
dist_check_SCRIPTS += tests/test_infill_server.py
TESTS += tests/test_infill_server.py
FUZZ_TARGETS += tests/fuzz/fuzz_reasoning.c
EXTRA_DIST += tests/fuzz/fuzz_reasoning.c tests/fuzz/fuzz_reasoning.dict
VALGRIND_SUITES += tests/test_reasoning
# llama-server's native shapes (server/native.c), and its API through the daemon:
# /completion, /props, /slots, /apply-template.
check_PROGRAMS += tests/test_native
tests_test_native_SOURCES = tests/test_native.c
tests_test_native_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_native_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_native
dist_check_SCRIPTS += tests/test_native_server.py
TESTS += tests/test_native_server.py

check_PROGRAMS += tests/test_lora
tests_test_lora_SOURCES = tests/test_lora.c
tests_test_lora_CFLAGS = $(TEST_CFLAGS)
tests_test_lora_LDADD = $(TEST_LIBS)
TESTS += tests/test_lora
# LoRA adapters through the daemon: /lora-adapters, per-request "lora", the prefix cache.
dist_check_SCRIPTS += tests/test_lora_server.py
TESTS += tests/test_lora_server.py

# GBNF grammars (engine/gbnf.h): parser, recognizer, token mask, the engine under a grammar.
check_PROGRAMS += tests/test_gbnf
tests_test_gbnf_SOURCES = tests/test_gbnf.c
tests_test_gbnf_CFLAGS = $(TEST_CFLAGS)
tests_test_gbnf_LDADD = $(TEST_LIBS)
TESTS += tests/test_gbnf
FUZZ_TARGETS += tests/fuzz/fuzz_gbnf.c
EXTRA_DIST += tests/fuzz/fuzz_gbnf.c tests/fuzz/fuzz_gbnf.dict tests/fuzz/corpus/fuzz_gbnf
dist_check_SCRIPTS += tests/test_grammar_server.py
TESTS += tests/test_grammar_server.py

# guided_regex / guided_choice to GBNF (server/regex.h).
check_PROGRAMS += tests/test_regex
tests_test_regex_SOURCES = tests/test_regex.c
tests_test_regex_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_regex_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_regex
VALGRIND_SUITES += tests/test_regex

# Context checkpoints through the daemon: --ctx-checkpoints, its metrics and log.
dist_check_SCRIPTS += tests/test_ckpt_server.py
TESTS += tests/test_ckpt_server.py
