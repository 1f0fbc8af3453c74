// rbee's native token loop: decode one token, sample the next, repeat, on a thread of its own, on
// the llama_context of a node-llama-cpp context (src/engine/worker/token-loop.ts says when).
// Each sampled token goes to JavaScript through a thread-safe function, so that JavaScript's work
// on a token (detokenizing, stop strings, the write to the hive) runs beside the next decode.
//
// It links to nothing of llama.cpp's: the llama_* functions are looked up at run time in the
// libllama the process has already loaded (node-llama-cpp's prebuilt one, a local build or a
// CUDA build), and node-llama-cpp's AddonContext is read through a copy of its layout that
// start() checks against what JavaScript knows of the context before it is trusted.

#include <dlfcn.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "napi.h"

namespace {

// ---- llama.h (llama.cpp as node-llama-cpp 3.22.1 ships it), as far as the loop uses it ----
typedef int32_t llama_token;
typedef int32_t llama_pos;
typedef int32_t llama_seq_id;
struct llama_context;
struct llama_model;
struct llama_vocab;
struct llama_sampler;
struct llama_batch {
  int32_t n_tokens;
  llama_token* token;
  float* embd;
  llama_pos* pos;
  int32_t* n_seq_id;
  llama_seq_id** seq_id;
  int8_t* logits;
};
struct llama_token_data {
  llama_token id;
  float logit;
  float p;
};
struct llama_token_data_array {
  llama_token_data* data;
  size_t size;
  int64_t selected;
  bool sorted;
};
struct llama_logit_bias {
  llama_token token;
  float bias;
};
struct llama_sampler_chain_params {
  bool no_perf;
};
struct llama_context_params {
  uint32_t n_ctx, n_batch, n_ubatch, n_seq_max, n_rs_seq, n_outputs_max, n_outputs_max_per_seq;
  int32_t n_threads, n_threads_batch;
  int ctx_type, rope_scaling_type, pooling_type, attention_type, flash_attn_type;
  float rope_freq_base, rope_freq_scale, yarn_ext_factor, yarn_attn_factor, yarn_beta_fast,
      yarn_beta_slow;
  uint32_t yarn_orig_ctx;
  float defrag_thold;
  void* cb_eval;
  void* cb_eval_user_data;
  int type_k, type_v;
  void* abort_callback;
  void* abort_callback_data;
  bool embeddings, offload_kqv, no_perf, op_offload, swa_full, kv_unified;
  void* samplers;
  size_t n_samplers;
  llama_context* ctx_other;
};

// node-llama-cpp's AddonContext (llama/addon/AddonContext.h), up to the fields read here.
struct AddonModel;
class AddonContextLayout : public Napi::ObjectWrap<AddonContextLayout> {
 public:
  AddonModel* model;
  llama_context_params context_params;
  llama_context* ctx;
};

struct Llama {
  int32_t (*decode)(llama_context*, llama_batch);
  llama_batch (*batch_init)(int32_t, int32_t, int32_t);
  void (*batch_free)(llama_batch);
  float* (*get_logits_ith)(llama_context*, int32_t);
  uint32_t (*n_ctx)(const llama_context*);
  uint32_t (*n_batch)(const llama_context*);
  uint32_t (*n_seq_max)(const llama_context*);
  const llama_model* (*get_model)(const llama_context*);
  const llama_vocab* (*model_get_vocab)(const llama_model*);
  int32_t (*vocab_n_tokens)(const llama_vocab*);
  bool (*vocab_is_eog)(const llama_vocab*, llama_token);
  llama_sampler_chain_params (*sampler_chain_default_params)();
  llama_sampler* (*sampler_chain_init)(llama_sampler_chain_params);
  void (*sampler_chain_add)(llama_sampler*, llama_sampler*);
  llama_sampler* (*sampler_init_greedy)();
  llama_sampler* (*sampler_init_dist)(uint32_t);
  llama_sampler* (*sampler_init_top_k)(int32_t);
  llama_sampler* (*sampler_init_top_p)(float, size_t);
  llama_sampler* (*sampler_init_min_p)(float, size_t);
  llama_sampler* (*sampler_init_temp)(float);
  llama_sampler* (*sampler_init_logit_bias)(int32_t, int32_t, const llama_logit_bias*);
  void (*sampler_apply)(llama_sampler*, llama_token_data_array*);
  void (*sampler_free)(llama_sampler*);
  void (*synchronize)(llama_context*);
};

Llama llama;
std::string llamaError = "not resolved";

/** The libllama the process has loaded, from /proc/self/maps: exactly one, or an error. */
std::string loadedLibllama(std::string& error) {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const auto base = path.substr(path.rfind('/') + 1);
    if (base.rfind("libllama.", 0) != 0 && base.rfind("libllama-", 0) != 0) continue;
    if (base.rfind("libllama-common", 0) == 0) continue;
    if (found.empty()) found = path;
    else if (found != path) {
      error = "more than one libllama is loaded (" + found + ", " + path + ")";
      return "";
    }
  }
  if (found.empty()) error = "no libllama is loaded in this process";
  return found;
}

template <typename F>
bool resolve(void* lib, const char* name, F& into, std::string& error) {
  void* symbol = dlsym(lib, name);
  if (symbol == nullptr) {
    error = std::string("libllama has no ") + name;
    return false;
  }
  into = reinterpret_cast<F>(symbol);
  return true;
}

bool resolveLlama(std::string& error) {
  const std::string path = loadedLibllama(error);
  if (path.empty()) return false;
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) {
    error = "dlopen(" + path + ", RTLD_NOLOAD) failed";
    return false;
  }
  return resolve(lib, "llama_decode", llama.decode, error) &&
         resolve(lib, "llama_batch_init", llama.batch_init, error) &&
         resolve(lib, "llama_batch_free", llama.batch_free, error) &&
         resolve(lib, "llama_get_logits_ith", llama.get_logits_ith, error) &&
         resolve(lib, "llama_n_ctx", llama.n_ctx, error) &&
         resolve(lib, "llama_n_batch", llama.n_batch, error) &&
         resolve(lib, "llama_n_seq_max", llama.n_seq_max, error) &&
         resolve(lib, "llama_get_model", llama.get_model, error) &&
         resolve(lib, "llama_model_get_vocab", llama.model_get_vocab, error) &&
         resolve(lib, "llama_vocab_n_tokens", llama.vocab_n_tokens, error) &&
         resolve(lib, "llama_vocab_is_eog", llama.vocab_is_eog, error) &&
         resolve(lib, "llama_sampler_chain_default_params", llama.sampler_chain_default_params, error) &&
         resolve(lib, "llama_sampler_chain_init", llama.sampler_chain_init, error) &&
         resolve(lib, "llama_sampler_chain_add", llama.sampler_chain_add, error) &&
         resolve(lib, "llama_sampler_init_greedy", llama.sampler_init_greedy, error) &&
         resolve(lib, "llama_sampler_init_dist", llama.sampler_init_dist, error) &&
         resolve(lib, "llama_sampler_init_top_k", llama.sampler_init_top_k, error) &&
         resolve(lib, "llama_sampler_init_top_p", llama.sampler_init_top_p, error) &&
         resolve(lib, "llama_sampler_init_min_p", llama.sampler_init_min_p, error) &&
         resolve(lib, "llama_sampler_init_temp", llama.sampler_init_temp, error) &&
         resolve(lib, "llama_sampler_init_logit_bias", llama.sampler_init_logit_bias, error) &&
         resolve(lib, "llama_sampler_apply", llama.sampler_apply, error) &&
         resolve(lib, "llama_sampler_free", llama.sampler_free, error) &&
         resolve(lib, "llama_synchronize", llama.synchronize, error);
}

struct Loop;
class LoopHandle;
void callJs(Napi::Env env, Napi::Function, Loop* loop, void*);
using Tsfn = Napi::TypedThreadSafeFunction<Loop, void, callJs>;

/** One generation on its thread. */
struct Loop {
  llama_context* ctx = nullptr;
  const llama_vocab* vocab = nullptr;
  int32_t nVocab = 0;
  llama_sampler* chain = nullptr;
  // Greedy (temperature 0): no chain, the first highest logit after the bias, which is what
  // llama.cpp's logit-bias and greedy samplers pick, without copying the vocabulary per token.
  bool greedy = false;
  std::vector<float> bias;  // per token; empty: none
  int32_t sequenceId = 0;
  uint32_t contextSize = 0;
  uint32_t batchSize = 0;
  std::vector<llama_token> prompt;
  llama_pos position = 0;  // the cache holds the sequence's tokens up to here
  std::vector<llama_token> stopTokens;
  int64_t maxTokens = 0;
  int64_t window = 8;

  bool returned = false;  // run() is over: the thread touches the loop no more (threads->mutex)
  Tsfn tsfn;
  Napi::FunctionReference onTokens;
  Napi::FunctionReference onEnd;
  Napi::ObjectReference keep;  // the AddonContext's JS object, alive while the thread runs
  LoopHandle* handle = nullptr;
  Napi::ObjectReference handleRef;

  std::mutex mutex;
  std::condition_variable wake;
  std::vector<llama_token> pending;  // sampled, not yet handed to JS
  bool signalled = false;            // a call to JS is on its way for them
  int64_t sampled = 0;
  int64_t consumed = 0;  // handed to JS and handled there
  std::atomic<bool> stop{false};
  bool finished = false;  // the thread is done with llama.cpp
  bool endCalled = false;
  std::string end;  // why it ended
  std::string error;

  ~Loop() {
    if (chain != nullptr) llama.sampler_free(chain);
  }

  bool isStop(llama_token token) const {
    if (token < 0) return true;
    if (llama.vocab_is_eog(vocab, token)) return true;
    for (auto t : stopTokens)
      if (t == token) return true;
    return false;
  }

  /** Decodes `n` tokens at `position` on, with logits for the last when asked. */
  bool decode(llama_batch& batch, const llama_token* tokens, int32_t n, bool logits) {
    batch.n_tokens = n;
    for (int32_t i = 0; i < n; i++) {
      batch.token[i] = tokens[i];
      batch.pos[i] = position + i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = sequenceId;
      batch.logits[i] = logits && i == n - 1;
    }
    const int32_t r = llama.decode(ctx, batch);
    if (r != 0) {
      error = r == 1 ? "could not find a KV slot for the batch (try reducing the size of the batch or "
                       "increase the context)"
                     : "Eval has failed (llama_decode returned " + std::to_string(r) + ")";
      return false;
    }
    llama.synchronize(ctx);
    position += n;
    return true;
  }

  /** Samples after the batch's last token, as node-llama-cpp's sampleToken does; -1: no token. */
  llama_token sample(std::vector<llama_token_data>& candidates, int32_t index) {
    const float* logits = llama.get_logits_ith(ctx, index);
    if (logits == nullptr) {
      error = "This model does not support token generation";
      return -2;
    }
    if (greedy) {
      llama_token best = 0;
      if (bias.empty()) {
        for (llama_token id = 1; id < nVocab; id++)
          if (logits[id] > logits[best]) best = id;
      } else {
        float bestLogit = logits[0] + bias[0];
        for (llama_token id = 1; id < nVocab; id++) {
          const float logit = logits[id] + bias[id];
          if (logit > bestLogit) {
            best = id;
            bestLogit = logit;
          }
        }
      }
      return nVocab > 0 ? best : -1;
    }
    for (llama_token id = 0; id < nVocab; id++) candidates[id] = llama_token_data{id, logits[id], 0.0f};
    llama_token_data_array cur{candidates.data(), static_cast<size_t>(nVocab), -1, false};
    llama.sampler_apply(chain, &cur);
    if (cur.size == 0 || cur.selected < 0 || cur.selected >= static_cast<int64_t>(cur.size)) return -1;
    return cur.data[cur.selected].id;
  }

  /**
   * Hands a token to JS at once, after waiting while JS is `window` tokens behind. No token waits
   * for a later one: tokens go together only when they were sampled while JS had not yet taken the
   * last ones (holding them back up to a millisecond saved the node a write per token on the tiny
   * model, but added that millisecond to the first tokens' time and is the batching into later
   * writes that a token stream must not do).
   */
  bool hand(llama_token token) {
    std::unique_lock<std::mutex> lock(mutex);
    if (stop.load() || sampled - consumed >= window) {
      if (!signalled && !pending.empty()) signal(lock);
      wake.wait(lock, [&] { return stop.load() || sampled - consumed < window; });
    }
    if (stop.load()) return false;
    pending.push_back(token);
    sampled++;
    if (!signalled) signal(lock);
    return true;
  }

  /** Wakes the main thread for the pending tokens (the lock held on entry and on return). */
  void signal(std::unique_lock<std::mutex>& lock) {
    signalled = true;
    lock.unlock();
    tsfn.NonBlockingCall();
    lock.lock();
  }

  void run() {
    try {
      generate();
    } catch (const std::exception& e) {
      error = e.what();
      end = "error";
    } catch (...) {
      error = "unknown error in the native token loop";
      end = "error";
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      finished = true;
    }
    tsfn.NonBlockingCall();  // the end
    tsfn.Release();
  }

  void generate() {
    llama_batch batch = llama.batch_init(static_cast<int32_t>(batchSize), 0, 1);
    std::vector<llama_token_data> candidates(static_cast<size_t>(nVocab));
    int64_t generated = 0;
    end = "stopped";
    // the prompt's tokens the cache does not hold, in batches, then one token at a time
    std::vector<llama_token> next = prompt;
    for (;;) {
      if (stop.load()) break;
      if (position + static_cast<int64_t>(next.size()) > static_cast<int64_t>(contextSize) - 1) {
        end = "contextFull";
        break;
      }
      bool ok = true;
      for (size_t start = 0; ok && start < next.size(); start += batchSize) {
        if (stop.load()) {
          ok = false;
          break;
        }
        const auto n = static_cast<int32_t>(std::min<size_t>(batchSize, next.size() - start));
        ok = decode(batch, next.data() + start, n, start + n == next.size());
      }
      if (!ok) {
        if (!error.empty()) end = "error";
        break;
      }
      if (stop.load()) break;
      const llama_token token = sample(candidates, static_cast<int32_t>(next.size() - 1) % static_cast<int32_t>(batchSize));
      if (token == -2) {
        end = "error";
        break;
      }
      if (!hand(token)) break;
      if (isStop(token)) {
        end = "token";
        break;
      }
      if (++generated >= maxTokens) {
        end = "maxTokens";
        break;
      }
      next.assign(1, token);
    }
    llama.batch_free(batch);
  }
};

/**
 * The threads loops run on: kept once started (a thread created per generation cost a tiny model's
 * first token ~0.4 ms more than the thread pool's did), one per loop running at once. Never freed:
 * an idle thread waits on it when the process exits.
 */
struct Threads {
  std::mutex mutex;
  std::condition_variable work;
  std::condition_variable returned;
  std::deque<Loop*> queue;
  size_t idle = 0;
};
Threads* threads = new Threads();

void serve() {
  for (;;) {
    Loop* loop;
    {
      std::unique_lock<std::mutex> lock(threads->mutex);
      threads->idle++;
      threads->work.wait(lock, [] { return !threads->queue.empty(); });
      threads->idle--;
      loop = threads->queue.front();
      threads->queue.pop_front();
    }
    loop->run();
    {
      std::lock_guard<std::mutex> lock(threads->mutex);
      loop->returned = true;
    }
    threads->returned.notify_all();
  }
}

/** Runs the loop on an idle thread, or a new one: never behind another loop. */
void runOnAThread(Loop* loop) {
  std::lock_guard<std::mutex> lock(threads->mutex);
  threads->queue.push_back(loop);
  if (threads->idle >= threads->queue.size()) threads->work.notify_one();
  else std::thread(serve).detach();
}

class LoopHandle : public Napi::ObjectWrap<LoopHandle> {
 public:
  Loop* loop = nullptr;
  static Napi::FunctionReference constructor;
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "NativeTokenLoop", {InstanceMethod("stop", &LoopHandle::Stop)});
    constructor = Napi::Persistent(f);
    exports.Set("NativeTokenLoop", f);
  }
  LoopHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LoopHandle>(info) {}
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (loop != nullptr) {
      {
        std::lock_guard<std::mutex> lock(loop->mutex);
        loop->stop.store(true);
      }
      loop->wake.notify_one();
    }
    return info.Env().Undefined();
  }
};
Napi::FunctionReference LoopHandle::constructor;

/** On the main thread: the tokens sampled since the last call, then, once, the end. */
void callJs(Napi::Env env, Napi::Function, Loop* loop, void*) {
  if (env == nullptr) return;
  std::vector<llama_token> tokens;
  bool finished;
  {
    std::lock_guard<std::mutex> lock(loop->mutex);
    tokens.swap(loop->pending);
    loop->signalled = false;
    finished = loop->finished && !loop->endCalled;
    if (finished) loop->endCalled = true;
  }
  if (!tokens.empty()) {
    auto array = Napi::Int32Array::New(env, tokens.size());
    std::memcpy(array.Data(), tokens.data(), tokens.size() * sizeof(llama_token));
    const Napi::Value stop = loop->onTokens.Call({array});
    {
      std::lock_guard<std::mutex> lock(loop->mutex);
      loop->consumed += static_cast<int64_t>(tokens.size());
      if (stop.IsBoolean() && stop.As<Napi::Boolean>().Value()) loop->stop.store(true);
    }
    loop->wake.notify_one();
  }
  if (finished) {
    loop->handle->loop = nullptr;
    loop->handleRef.Reset();
    loop->keep.Reset();
    loop->onEnd.Call({Napi::String::New(env, loop->end), Napi::Number::New(env, loop->position),
                      loop->error.empty() ? env.Undefined() : Napi::String::New(env, loop->error)});
  }
}

/** Looks llama.cpp up, until it is found (node-llama-cpp loads it when first asked for). */
void ensureLlama() {
  if (llamaError.empty()) return;
  std::string error;
  if (resolveLlama(error)) llamaError.clear();
  else llamaError = error;
}

/**
 * The llama_context under node-llama-cpp's AddonContext `wrapped`, read through the layout copied
 * above once what that layout says matches what JS knows of the context (its size, its batch size,
 * one sequence); else why not.
 */
std::string contextOf(Napi::Env env, Napi::Object wrapped, uint32_t contextSize, uint32_t batchSize,
                      llama_context*& ctx) {
  void* raw = nullptr;
  if (napi_unwrap(env, wrapped, &raw) != napi_ok || raw == nullptr) return "not a wrapped native object";
  auto* addon = static_cast<AddonContextLayout*>(raw);
  // the layout read against what JS knows of this context, before any pointer in it is followed
  const auto& p = addon->context_params;
  if (p.n_ctx != contextSize || p.n_batch != batchSize || p.n_ubatch != batchSize || p.n_seq_max != 1 ||
      addon->ctx == nullptr || addon->model == nullptr)
    return "node-llama-cpp's context is not laid out as expected";
  if (llama.n_ctx(addon->ctx) != contextSize || llama.n_batch(addon->ctx) != batchSize ||
      llama.n_seq_max(addon->ctx) != 1)
    return "the native context does not match the JS one";
  ctx = addon->ctx;
  return "";
}

/** check(addonContext, contextSize, batchSize): undefined when start() can run on it, else why not. */
Napi::Value Check(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLlama();
  if (!llamaError.empty()) return Napi::String::New(env, llamaError);
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsNumber() || !info[2].IsNumber())
    return Napi::String::New(env, "bad arguments");
  llama_context* ctx = nullptr;
  const std::string problem = contextOf(env, info[0].As<Napi::Object>(), info[1].As<Napi::Number>().Uint32Value(),
                                        info[2].As<Napi::Number>().Uint32Value(), ctx);
  return problem.empty() ? env.Undefined() : Napi::String::New(env, problem);
}

/**
 * start(addonContext, options, onTokens, onEnd): a NativeTokenLoop, or a string that says why
 * not (the loop is not usable on this context). options: contextSize, batchSize, sequenceId,
 * position, prompt (Uint32Array), stopTokens (Uint32Array), maxTokens, window, temperature, minP,
 * topK, topP, seed, biasKeys (Uint32Array), biasValues (Float32Array).
 * onTokens(Int32Array) → true to stop; onEnd(reason, position, error).
 */
Napi::Value Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLlama();
  if (!llamaError.empty()) return Napi::String::New(env, llamaError);
  auto why = [&](const std::string& s) { return Napi::String::New(env, s); };
  if (info.Length() < 4 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsFunction() ||
      !info[3].IsFunction())
    return why("bad arguments");
  Napi::Object wrapped = info[0].As<Napi::Object>();
  Napi::Object o = info[1].As<Napi::Object>();
  llama_context* ctx = nullptr;
  const std::string problem = contextOf(env, wrapped, o.Get("contextSize").As<Napi::Number>().Uint32Value(),
                                        o.Get("batchSize").As<Napi::Number>().Uint32Value(), ctx);
  if (!problem.empty()) return why(problem);
  const uint32_t contextSize = o.Get("contextSize").As<Napi::Number>().Uint32Value();
  const uint32_t batchSize = o.Get("batchSize").As<Napi::Number>().Uint32Value();

  auto* loop = new Loop();
  loop->ctx = ctx;
  loop->vocab = llama.model_get_vocab(llama.get_model(ctx));
  loop->nVocab = llama.vocab_n_tokens(loop->vocab);
  loop->contextSize = contextSize;
  loop->batchSize = batchSize;
  loop->sequenceId = o.Get("sequenceId").As<Napi::Number>().Int32Value();
  loop->position = o.Get("position").As<Napi::Number>().Int32Value();
  auto prompt = o.Get("prompt").As<Napi::Uint32Array>();
  loop->prompt.assign(prompt.Data(), prompt.Data() + prompt.ElementLength());
  auto stops = o.Get("stopTokens").As<Napi::Uint32Array>();
  loop->stopTokens.assign(stops.Data(), stops.Data() + stops.ElementLength());
  loop->maxTokens = o.Get("maxTokens").As<Napi::Number>().Int64Value();
  if (o.Has("window")) loop->window = std::max<int64_t>(1, o.Get("window").As<Napi::Number>().Int64Value());
  if (loop->prompt.empty()) {
    delete loop;
    return why("nothing to evaluate");
  }

  // the chain as node-llama-cpp's AddonSampler builds it (ApplyConfig, rebuildChainIfNeeded) for
  // what the token loop sends it: logit bias, then greedy (done here without a chain, see
  // Loop::greedy), or top-k, top-p, min-p, temperature, dist
  const float temperature = o.Get("temperature").As<Napi::Number>().FloatValue();
  const float minP = o.Get("minP").As<Napi::Number>().FloatValue();
  const int32_t topK = o.Get("topK").As<Napi::Number>().Int32Value();
  const float topP = o.Get("topP").As<Napi::Number>().FloatValue();
  const uint32_t seed = o.Get("seed").As<Napi::Number>().Uint32Value();
  std::vector<llama_logit_bias> biases;
  if (o.Has("biasKeys")) {
    auto keys = o.Get("biasKeys").As<Napi::Uint32Array>();
    auto values = o.Get("biasValues").As<Napi::Float32Array>();
    if (keys.ElementLength() == values.ElementLength())
      for (size_t i = 0; i < keys.ElementLength(); i++)
        biases.push_back(llama_logit_bias{static_cast<llama_token>(keys[i]), values[i]});
  }
  if (temperature <= 0.0f) {
    loop->greedy = true;
    if (!biases.empty()) {
      loop->bias.assign(static_cast<size_t>(loop->nVocab), 0.0f);
      for (const auto& b : biases)
        if (b.token >= 0 && b.token < loop->nVocab) loop->bias[static_cast<size_t>(b.token)] += b.bias;
    }
  } else {
    llama_sampler* chain = llama.sampler_chain_init(llama.sampler_chain_default_params());
    if (!biases.empty())
      llama.sampler_chain_add(
          chain, llama.sampler_init_logit_bias(loop->nVocab, static_cast<int32_t>(biases.size()), biases.data()));
    llama.sampler_chain_add(chain, llama.sampler_init_top_k(topK <= 0 ? loop->nVocab : std::min(topK, loop->nVocab)));
    // (AddonSampler starts from a top-p of 1, "off", and makes a sampler only for another value)
    if (topP != 1.0f && topP >= 0.0f && topP <= 1.0f) llama.sampler_chain_add(chain, llama.sampler_init_top_p(topP, 1));
    if (minP > 0.0f) llama.sampler_chain_add(chain, llama.sampler_init_min_p(minP, 1));
    llama.sampler_chain_add(chain, llama.sampler_init_temp(temperature));
    llama.sampler_chain_add(chain, llama.sampler_init_dist(seed));
    loop->chain = chain;
  }

  loop->onTokens = Napi::Persistent(info[2].As<Napi::Function>());
  loop->onEnd = Napi::Persistent(info[3].As<Napi::Function>());
  loop->keep = Napi::Persistent(wrapped);
  Napi::Object handle = LoopHandle::constructor.New({});
  LoopHandle::Unwrap(handle)->loop = loop;
  loop->tsfn = Tsfn::New(env, "rbee-token-loop", 0, 1, loop, [](Napi::Env, void*, Loop* loop) {
    // On the main thread once the thread has let go of it, or when the environment goes away
    // (the process exits) with the thread still on: then it is told to stop, and waited for
    // before the thread-safe function it uses is deleted.
    {
      std::lock_guard<std::mutex> lock(loop->mutex);
      loop->stop.store(true);
      if (!loop->endCalled && loop->handle != nullptr) loop->handle->loop = nullptr;
    }
    loop->wake.notify_one();
    {
      std::unique_lock<std::mutex> lock(threads->mutex);
      threads->returned.wait(lock, [loop] { return loop->returned; });
    }
    delete loop;
  });
  // the handle's stop() reaches the loop until its end has been told
  loop->handle = LoopHandle::Unwrap(handle);
  loop->handleRef = Napi::Persistent(handle);
  runOnAThread(loop);
  return handle;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  LoopHandle::Init(env, exports);
  exports.Set("check", Napi::Function::New(env, Check));
  exports.Set("start", Napi::Function::New(env, Start));
  return exports;
}

}  // namespace

NODE_API_MODULE(rbee_token_loop, Init)
