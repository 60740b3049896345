// Bindings of the data core: returns_to_go, SegmentSampler, ReplayBuffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <optional>

#include "bindings/common.hpp"
#include "core/replay_buffer.hpp"
#include "core/returns.hpp"
#include "core/segment_sampler.hpp"
#include "core/thread_pool.hpp"

namespace pyseqrl::bind {

namespace py = pybind11;
using f32 = py::array_t<float, py::array::c_style>;
using i64 = py::array_t<int64_t, py::array::c_style>;

// ------------------------------------------------------------------------------------------------------------
// returns_to_go

// One pool for all returns_to_go calls; the mutex serialises callers from several Python threads.
static ThreadPool& shared_pool() {
  static ThreadPool pool(0);
  return pool;
}
static std::mutex shared_pool_mu;

void register_returns(py::module_& m) {
  m.def(
      "returns_to_go",
      [](const py::object& rewards_obj, const py::object& ends_obj, double gamma, bool parallel) {
        auto rewards = require<float>(rewards_obj, "rewards", 1);
        auto ends = require<int64_t>(ends_obj, "episode_ends", 1);
        const int64_t n = rewards.shape(0), E = ends.shape(0);
        f32 out(n);
        const float* r = rewards.data();
        const int64_t* e = ends.data();
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          std::lock_guard<std::mutex> lock(shared_pool_mu);
          returns_to_go(r, n, e, E, gamma, o, parallel ? &shared_pool() : nullptr);
        }
        return out;
      },
      py::arg("rewards"), py::arg("episode_ends"), py::arg("gamma") = 1.0, py::arg("parallel") = true,
      "Per-episode discounted reverse cumulative sum: float32 [N] rewards, int64 [E] exclusive episode ends.");
}

// ------------------------------------------------------------------------------------------------------------
// SegmentSampler

struct PySegmentSampler {
  f32 observations, actions, rewards;
  i64 episode_ends;
  std::optional<f32> state_mean, state_std;
  std::unique_ptr<SegmentSampler> sampler;  // declared last: destroyed (worker stopped) before the arrays
};

struct BatchHolder {
  std::unique_ptr<SegmentBatch> batch;
  std::weak_ptr<BatchPool> pool;
  ~BatchHolder() {
    if (auto p = pool.lock()) p->give(std::move(batch));
  }
};

static py::dict batch_dict(const SegmentSamplerConfig& c, int64_t S, int64_t A, float* states, float* actions,
                           float* rewards, float* rtg, int64_t* timesteps, float* mask, const py::object& base) {
  const py::ssize_t B = c.batch_size, K = c.context_len;
  py::dict d;
  d["states"] = f32({B, K, static_cast<py::ssize_t>(S)}, states, base);
  d["actions"] = f32({B, K, static_cast<py::ssize_t>(A)}, actions, base);
  d["rewards"] = f32({B, K, py::ssize_t(1)}, rewards, base);
  d["returns_to_go"] = f32({B, K, py::ssize_t(1)}, rtg, base);
  d["timesteps"] = i64({B, K}, timesteps, base);
  d["attention_mask"] = f32({B, K}, mask, base);
  return d;
}

static py::dict wrap_batch(const SegmentSampler& s, std::unique_ptr<SegmentBatch> b) {
  SegmentBatch* raw = b.get();
  auto* holder = new BatchHolder{std::move(b), s.buffer_pool()};
  py::capsule owner(holder, [](void* p) { delete static_cast<BatchHolder*>(p); });
  return batch_dict(s.config(), s.state_dim(), s.action_dim(), raw->states.get(), raw->actions.get(),
                    raw->rewards.get(), raw->returns_to_go.get(), raw->timesteps.get(), raw->mask.get(), owner);
}

void register_segment_sampler(py::module_& m) {
  py::class_<PySegmentSampler>(m, "SegmentSampler", "Native Decision-Transformer window sampler (see pyseqrl.SegmentSampler).")
      .def(py::init([](const py::object& obs_o, const py::object& act_o, const py::object& rew_o,
                       const py::object& ends_o, const py::object& mean_o, const py::object& std_o,
                       int64_t context_len, int64_t batch_size, uint64_t seed, double return_scale, double gamma,
                       int64_t max_ep_len, bool sample_by_length, float pad_action, bool pad_right, int prefetch,
                       int num_threads) {
             auto self = std::make_unique<PySegmentSampler>();
             self->observations = require<float>(obs_o, "observations", 2);
             const int64_t N = self->observations.shape(0), S = self->observations.shape(1);
             self->actions = require<float>(act_o, "actions", 2);
             check_shape(self->actions, "actions", {N, -1});
             self->rewards = require<float>(rew_o, "rewards", 1);
             check_shape(self->rewards, "rewards", {N});
             self->episode_ends = require<int64_t>(ends_o, "episode_ends", 1);
             PYSEQRL_CHECK(mean_o.is_none() == std_o.is_none(), "state_mean/state_std: give both or neither");
             if (!mean_o.is_none()) {
               self->state_mean = require<float>(mean_o, "state_mean", 1);
               check_shape(*self->state_mean, "state_mean", {S});
               self->state_std = require<float>(std_o, "state_std", 1);
               check_shape(*self->state_std, "state_std", {S});
             }
             SegmentSamplerConfig c;
             c.context_len = context_len;
             c.batch_size = batch_size;
             c.seed = seed;
             c.return_scale = return_scale;
             c.gamma = gamma;
             c.max_ep_len = max_ep_len;
             c.sample_by_length = sample_by_length;
             c.pad_action = pad_action;
             c.pad_right = pad_right;
             c.prefetch = prefetch;
             c.num_threads = num_threads;
             const float* mean = self->state_mean ? self->state_mean->data() : nullptr;
             const float* sd = self->state_std ? self->state_std->data() : nullptr;
             const int64_t A = self->actions.shape(1), E = self->episode_ends.shape(0);
             self->sampler = std::make_unique<SegmentSampler>(self->observations.data(), self->actions.data(),
                                                              self->rewards.data(), N, S, A,
                                                              self->episode_ends.data(), E, mean, sd, c);
             return self;
           }),
           py::arg("observations"), py::arg("actions"), py::arg("rewards"), py::arg("episode_ends"),
           py::arg("state_mean") = py::none(), py::arg("state_std") = py::none(), py::arg("context_len") = 20,
           py::arg("batch_size") = 64, py::arg("seed") = 0, py::arg("return_scale") = 1000.0,
           py::arg("gamma") = 1.0, py::arg("max_ep_len") = 1000, py::arg("sample_by_length") = true,
           py::arg("pad_action") = -10.0f, py::arg("pad_right") = false, py::arg("prefetch") = 2, py::arg("num_threads") = 1)
      .def(
          "sample",
          [](PySegmentSampler& self) {
            std::unique_ptr<SegmentBatch> b;
            {
              py::gil_scoped_release release;
              b = self.sampler->next();
            }
            return wrap_batch(*self.sampler, std::move(b));
          },
          "The next batch of the stream as a dict of numpy arrays.")
      .def(
          "sample_into",
          [](PySegmentSampler& self, const py::dict& out) {
            const auto& c = self.sampler->config();
            const py::ssize_t B = c.batch_size, K = c.context_len, S = self.sampler->state_dim(),
                              A = self.sampler->action_dim();
            auto get = [&](const char* key) {
              if (!out.contains(key)) throw std::invalid_argument(std::string("sample_into: missing key '") + key + "'");
              return py::object(out[key]);
            };
            auto st = require<float>(get("states"), "states", 3);
            check_shape(st, "states", {B, K, S});
            auto ac = require<float>(get("actions"), "actions", 3);
            check_shape(ac, "actions", {B, K, A});
            auto rw = require<float>(get("rewards"), "rewards", 3);
            check_shape(rw, "rewards", {B, K, 1});
            auto rt = require<float>(get("returns_to_go"), "returns_to_go", 3);
            check_shape(rt, "returns_to_go", {B, K, 1});
            auto ts = require<int64_t>(get("timesteps"), "timesteps", 2);
            check_shape(ts, "timesteps", {B, K});
            auto mk = require<float>(get("attention_mask"), "attention_mask", 2);
            check_shape(mk, "attention_mask", {B, K});
            float *p_st = st.mutable_data(), *p_ac = ac.mutable_data(), *p_rw = rw.mutable_data(),
                  *p_rt = rt.mutable_data(), *p_mk = mk.mutable_data();
            int64_t* p_ts = ts.mutable_data();
            py::gil_scoped_release release;
            self.sampler->next_into(p_st, p_ac, p_rw, p_rt, p_ts, p_mk);
          },
          py::arg("out"), "Write the next batch into preallocated C-contiguous arrays (e.g. pinned tensors).")
      .def(
          "batch_at",
          [](PySegmentSampler& self, int64_t index) {
            PYSEQRL_CHECK(index >= 0, "index: expected a non-negative batch index, got ", index);
            const auto& c = self.sampler->config();
            auto b = std::make_unique<SegmentBatch>(c.batch_size, c.context_len, self.sampler->state_dim(),
                                                    self.sampler->action_dim());
            {
              py::gil_scoped_release release;
              self.sampler->fill(index, b->states.get(), b->actions.get(), b->rewards.get(), b->returns_to_go.get(),
                                 b->timesteps.get(), b->mask.get());
            }
            return wrap_batch(*self.sampler, std::move(b));
          },
          py::arg("index"), "Batch `index` of the stream, computed directly (does not move the stream).")
      .def(
          "draws",
          [](PySegmentSampler& self, int64_t index) {
            PYSEQRL_CHECK(index >= 0, "index: expected a non-negative batch index, got ", index);
            const int64_t B = self.sampler->config().batch_size;
            i64 eps(B), starts(B);
            for (int64_t r = 0; r < B; ++r)
              self.sampler->draw(index, r, eps.mutable_data() + r, starts.mutable_data() + r);
            return py::make_tuple(eps, starts);
          },
          py::arg("index"), "(episode index, start offset) of every row of batch `index`.")
      .def_property(
          "position", [](const PySegmentSampler& self) { return self.sampler->position(); },
          [](PySegmentSampler& self, int64_t index) {
            py::gil_scoped_release release;
            self.sampler->set_position(index);
          })
      .def_property_readonly("returns_to_go",
                             [](const PySegmentSampler& self) {
                               const auto& r = self.sampler->returns_to_go();
                               return f32(static_cast<py::ssize_t>(r.size()), r.data());
                             })
      .def_property_readonly("state_dim", [](const PySegmentSampler& self) { return self.sampler->state_dim(); })
      .def_property_readonly("action_dim", [](const PySegmentSampler& self) { return self.sampler->action_dim(); })
      .def_property_readonly("num_episodes", [](const PySegmentSampler& self) { return self.sampler->num_episodes(); })
      .def_property_readonly("context_len",
                             [](const PySegmentSampler& self) { return self.sampler->config().context_len; })
      .def_property_readonly("batch_size",
                             [](const PySegmentSampler& self) { return self.sampler->config().batch_size; })
      .def_property_readonly("seed", [](const PySegmentSampler& self) { return self.sampler->config().seed; })
      .def_property_readonly("prefetch", [](const PySegmentSampler& self) { return self.sampler->config().prefetch; })
      .def_property_readonly("pad_right",
                             [](const PySegmentSampler& self) { return self.sampler->config().pad_right; });
}

// ------------------------------------------------------------------------------------------------------------
// ReplayBuffer

struct PyReplayBuffer {
  std::vector<py::ssize_t> obs_shape, action_shape;
  std::unique_ptr<ReplayBuffer> rb;
};

static int64_t shape_size(const std::vector<py::ssize_t>& shape, const char* name) {
  PYSEQRL_CHECK(!shape.empty(), name, ": expected a non-empty shape tuple, got ()");
  int64_t n = 1;
  for (auto s : shape) {
    PYSEQRL_CHECK(s > 0, name, ": expected positive sizes, got ", s);
    n = checked_mul(n, s, name);
  }
  return n;
}

static std::vector<py::ssize_t> batch_shape(py::ssize_t n, const std::vector<py::ssize_t>& tail) {
  std::vector<py::ssize_t> s{n};
  s.insert(s.end(), tail.begin(), tail.end());
  return s;
}

void register_replay_buffer(py::module_& m) {
  py::class_<PyReplayBuffer>(m, "ReplayBuffer", "Native transition ring buffer (see pyseqrl.ReplayBuffer).")
      .def(py::init([](int64_t capacity, std::vector<py::ssize_t> obs_shape, std::vector<py::ssize_t> action_shape,
                       uint64_t seed, bool prioritized, double alpha, double beta, double eps) {
             auto self = std::make_unique<PyReplayBuffer>();
             ReplayBufferConfig c;
             c.capacity = capacity;
             c.obs_size = shape_size(obs_shape, "obs_shape");
             c.action_size = shape_size(action_shape, "action_shape");
             c.seed = seed;
             c.prioritized = prioritized;
             c.alpha = alpha;
             c.beta = beta;
             c.eps = eps;
             self->obs_shape = std::move(obs_shape);
             self->action_shape = std::move(action_shape);
             self->rb = std::make_unique<ReplayBuffer>(c);
             return self;
           }),
           py::arg("capacity"), py::arg("obs_shape"), py::arg("action_shape"), py::arg("seed") = 0,
           py::arg("prioritized") = false, py::arg("alpha") = 0.6, py::arg("beta") = 0.4, py::arg("eps") = 1e-6)
      .def(
          "add",
          [](PyReplayBuffer& self, const py::object& obs_o, const py::object& act_o, const py::object& rew_o,
             const py::object& next_o, const py::object& term_o) {
            auto obs = as_numeric<float>(obs_o, "observations");
            const py::ssize_t n = obs.ndim() > 0 ? obs.shape(0) : 0;
            check_shape(obs, "observations", batch_shape(n, self.obs_shape));
            auto next = as_numeric<float>(next_o, "next_observations");
            check_shape(next, "next_observations", batch_shape(n, self.obs_shape));
            auto act = as_numeric<float>(act_o, "actions");
            check_shape(act, "actions", batch_shape(n, self.action_shape));
            auto rew = as_numeric<float>(rew_o, "rewards");
            check_shape(rew, "rewards", {n});
            auto term = as_numeric<float>(term_o, "terminated");
            check_shape(term, "terminated", {n});
            py::gil_scoped_release release;  // add() validates the values (finite, 0/1 terminals) itself
            self.rb->add(n, obs.data(), act.data(), rew.data(), next.data(), term.data());
          },
          py::arg("observations"), py::arg("actions"), py::arg("rewards"), py::arg("next_observations"),
          py::arg("terminated"))
      .def(
          "sample",
          [](PyReplayBuffer& self, int64_t batch_size) {
            PYSEQRL_CHECK(batch_size > 0, "batch_size: expected a positive integer, got ", batch_size);
            const auto& c = self.rb->config();
            // 2 x obs, actions, rewards, terminals (float32), indices (int64), weights (float32)
            const int64_t row = checked_add(checked_mul(2, c.obs_size, "obs_shape"), c.action_size,
                                            "obs_shape + action_shape") * 4 + 16;
            check_allocation(checked_mul(batch_size, row, "batch_size x obs_shape"), "batch_size: one sample");
            const bool prio = self.rb->config().prioritized;
            f32 obs(batch_shape(batch_size, self.obs_shape)), next(batch_shape(batch_size, self.obs_shape));
            f32 act(batch_shape(batch_size, self.action_shape)), rew(batch_size), term(batch_size);
            std::optional<i64> idx;
            std::optional<f32> w;
            if (prio) {
              idx.emplace(batch_size);
              w.emplace(batch_size);
            }
            float *po = obs.mutable_data(), *pn = next.mutable_data(), *pa = act.mutable_data(),
                  *pr = rew.mutable_data(), *pt = term.mutable_data();
            int64_t* pi = prio ? idx->mutable_data() : nullptr;
            float* pw = prio ? w->mutable_data() : nullptr;
            {
              py::gil_scoped_release release;
              self.rb->sample(batch_size, po, pa, pr, pn, pt, pi, pw);
            }
            py::dict d;
            d["observations"] = obs;
            d["actions"] = act;
            d["rewards"] = rew;
            d["next_observations"] = next;
            d["terminals"] = term;
            if (prio) {
              d["indices"] = *idx;
              d["weights"] = *w;
            }
            return d;
          },
          py::arg("batch_size"))
      .def(
          "update_priorities",
          [](PyReplayBuffer& self, const py::object& idx_o, const py::object& prio_o) {
            auto idx = as_numeric<int64_t>(idx_o, "indices");
            auto pr = as_numeric<double>(prio_o, "priorities");
            PYSEQRL_CHECK(idx.ndim() == 1, "indices: expected a 1-D array, got shape ", shape_str(idx));
            check_shape(pr, "priorities", {idx.shape(0)});
            self.rb->update_priorities(idx.shape(0), idx.data(), pr.data());
          },
          py::arg("indices"), py::arg("priorities"))
      .def("__len__", [](const PyReplayBuffer& self) { return self.rb->size(); })
      .def_property("beta", [](const PyReplayBuffer& self) { return self.rb->config().beta; },
                    [](PyReplayBuffer& self, double b) { self.rb->set_beta(b); })
      .def_property_readonly("capacity", [](const PyReplayBuffer& self) { return self.rb->config().capacity; })
      .def_property_readonly("obs_shape", [](const PyReplayBuffer& self) { return py::tuple(py::cast(self.obs_shape)); })
      .def_property_readonly("action_shape",
                             [](const PyReplayBuffer& self) { return py::tuple(py::cast(self.action_shape)); })
      .def_property_readonly("prioritized", [](const PyReplayBuffer& self) { return self.rb->config().prioritized; })
      .def_property_readonly("alpha", [](const PyReplayBuffer& self) { return self.rb->config().alpha; })
      .def_property_readonly("eps", [](const PyReplayBuffer& self) { return self.rb->config().eps; })
      .def_property_readonly("seed", [](const PyReplayBuffer& self) { return self.rb->config().seed; })
      .def_property_readonly("position", [](const PyReplayBuffer& self) { return self.rb->position(); })
      .def("get_state",
           [](const PyReplayBuffer& self) {
             auto st = self.rb->get_state();
             const py::ssize_t n = st.size;
             py::dict d;
             d["size"] = st.size;
             d["position"] = st.position;
             d["rng"] = py::array_t<uint64_t>(4, st.rng.data());
             d["max_priority"] = st.max_priority;
             d["observations"] = f32(batch_shape(n, self.obs_shape), st.obs.data());
             d["next_observations"] = f32(batch_shape(n, self.obs_shape), st.next_obs.data());
             d["actions"] = f32(batch_shape(n, self.action_shape), st.actions.data());
             d["rewards"] = f32(n, st.rewards.data());
             d["terminals"] = f32(n, st.terminals.data());
             if (self.rb->config().prioritized)
               d["priorities"] = py::array_t<double>(static_cast<py::ssize_t>(st.priorities.size()), st.priorities.data());
             return d;
           })
      .def(
          "set_state",
          [](PyReplayBuffer& self, const py::dict& d) {
            auto get = [&](const char* key) {
              if (!d.contains(key)) throw std::invalid_argument(std::string("state: missing key '") + key + "'");
              return py::object(d[key]);
            };
            ReplayBuffer::State st;
            st.size = get("size").cast<int64_t>();
            st.position = get("position").cast<int64_t>();
            auto rng = require<uint64_t>(get("rng"), "state['rng']", 1);
            check_shape(rng, "state['rng']", {4});
            std::copy(rng.data(), rng.data() + 4, st.rng.begin());
            st.max_priority = get("max_priority").cast<double>();
            auto vec = [&](const char* key, std::vector<py::ssize_t> shape) {
              auto a = as_numeric<float>(get(key), key);
              check_shape(a, key, shape);
              return std::vector<float>(a.data(), a.data() + a.size());
            };
            const py::ssize_t n = st.size;
            st.obs = vec("observations", batch_shape(n, self.obs_shape));
            st.next_obs = vec("next_observations", batch_shape(n, self.obs_shape));
            st.actions = vec("actions", batch_shape(n, self.action_shape));
            st.rewards = vec("rewards", {n});
            st.terminals = vec("terminals", {n});
            if (self.rb->config().prioritized) {
              auto p = as_numeric<double>(get("priorities"), "priorities");
              check_shape(p, "priorities", {n});
              st.priorities.assign(p.data(), p.data() + p.size());
            }
            self.rb->set_state(st);
          },
          py::arg("state"));
}

}  // namespace pyseqrl::bind
