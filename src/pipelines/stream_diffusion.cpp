#include "streamgen/stream_diffusion.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "streamgen/error.h"

namespace streamgen {

CfgType parse_cfg_type(const std::string& name) {
  if (name == "none") return CfgType::None;
  if (name == "full") return CfgType::Full;
  if (name == "self") return CfgType::Self;
  if (name == "initialize") return CfgType::Initialize;
  throw Error("unknown cfg type '" + name + "' (expected none, full, self or initialize)");
}

StreamDiffusion::StreamDiffusion(UNet2DConditionModel unet, LcmScheduler scheduler, StreamDiffusionConfig config, torch::Tensor init_noise)
    : unet_(std::move(unet)), scheduler_(std::move(scheduler)), config_(std::move(config)) {
  const auto schedule = scheduler_.timesteps(config_.num_inference_steps);
  for (auto i : config_.t_index_list) {
    if (i < 0 || i >= static_cast<std::int64_t>(schedule.size()))
      throw Error("t_index " + std::to_string(i) + " outside 0.." + std::to_string(schedule.size() - 1));
    timesteps_.push_back(schedule[static_cast<std::size_t>(i)]);
  }
  if (timesteps_.empty()) throw Error("t_index_list is empty");
  const auto n = slots(), F = config_.frame_buffer_size;
  if (F < 1) throw Error("frame_buffer_size must be at least 1");
  // The sequential loop only uses slot 0's noise, so it may come alone.
  const bool slot0_only = !config_.use_denoising_batch && init_noise.dim() == 4 && (init_noise.size(0) == 1 || init_noise.size(0) == F);
  if (init_noise.dim() != 4 || (init_noise.size(0) != n && init_noise.size(0) != n * F && !slot0_only))
    throw Error("init_noise must be [n, C, h, w] or [n*F, C, h, w] with n = " + std::to_string(n) + ", F = " + std::to_string(F));
  if (slot0_only)
    noise_ = init_noise.expand({F, -1, -1, -1}).repeat({n, 1, 1, 1}).to(torch::kFloat32);
  else
    noise_ = (init_noise.size(0) == n ? init_noise.repeat_interleave(F, 0) : init_noise).to(torch::kFloat32);

  std::vector<float> a, b, cs, co;
  for (auto t : timesteps_) {
    const float alpha = scheduler_.alpha_prod(t);
    a.push_back(std::sqrt(alpha));
    b.push_back(std::sqrt(1.0f - alpha));
    const auto s = scheduler_.scalings(t);
    cs.push_back(s.c_skip);
    co.push_back(s.c_out);
  }
  A_ = per_row(a);
  B_ = per_row(b);
  c_skip_ = per_row(cs);
  c_out_ = per_row(co);
  t_rows_ = torch::tensor(timesteps_, torch::kInt64).repeat_interleave(F);
  const auto shape = noise_.sizes().vec();
  auto buffer_shape = shape;
  buffer_shape[0] = (n - 1) * F;
  buffer_ = torch::zeros(buffer_shape);
  refs_ = torch::zeros(buffer_shape);
  stock_ = torch::zeros(shape);
  generator_ = at::detail::createCPUGenerator(0);
  if (!config_.use_denoising_batch && config_.cfg != CfgType::None)
    throw Error("the sequential mode supports cfg none only so far (use the batched stream for RCFG)");
}

void StreamDiffusion::seed(std::uint64_t s) { generator_ = at::detail::createCPUGenerator(s); }

void StreamDiffusion::reset() {
  buffer_.zero_();
  refs_.zero_();
  stock_.zero_();
  calls_ = 0;
}

StreamDiffusion::Output StreamDiffusion::step_sequential(const torch::Tensor& z, const torch::Tensor& renoise) {
  // Per frame: n UNet calls, each slot's constants in turn; the same N_0 as the batched path.
  const auto n = slots(), F = config_.frame_buffer_size;
  const auto cond = cond_.expand(F);
  auto x = config_.txt2img ? z : A_.narrow(0, 0, F) * z + B_.narrow(0, 0, F) * noise_.narrow(0, 0, F);
  std::vector<torch::Tensor> x0s;
  for (std::int64_t k = 0; k < n; ++k) {
    const auto rows = [&](const torch::Tensor& t) { return t.narrow(0, k * F, F); };
    auto eps = unet_rows(x, rows(t_rows_), cond);
    if (scheduler_.config().prediction_type == "v_prediction") eps = rows(B_) * x + rows(A_) * eps;
    const auto x0 = rows(c_out_) * ((x - rows(B_) * eps) / rows(A_)) + rows(c_skip_) * x;
    x0s.push_back(x0);
    if (k + 1 < n) {
      torch::Tensor noise = renoise.defined() ? renoise[k].reshape(x.sizes()).to(torch::kFloat32) : torch::randn(x.sizes(), generator_);
      const auto next = [&](const torch::Tensor& t) { return t.narrow(0, (k + 1) * F, F); };
      x = next(A_) * x0;
      if (config_.do_add_noise) x = x + next(B_) * noise;
    }
  }
  Output out;
  out.latents = x0s.back();
  out.x0_batch = torch::cat(x0s);
  ++calls_;
  return out;
}

torch::Tensor StreamDiffusion::per_row(const std::vector<float>& per_slot) const {
  return torch::tensor(per_slot).repeat_interleave(config_.frame_buffer_size).view({-1, 1, 1, 1});
}

void StreamDiffusion::set_embeddings(torch::Tensor cond, torch::Tensor uncond) {
  set_embeddings(UNetConditioning{std::move(cond)}, UNetConditioning{std::move(uncond)});
}

void StreamDiffusion::set_embeddings(UNetConditioning cond, UNetConditioning uncond) {
  const auto& c = cond.encoder_hidden_states;
  if (!c.defined() || c.dim() != 3 || c.size(0) != 1) throw Error("stream: cond embeddings must be [1, L, D]");
  const auto& sdxl = unet_->config;
  if (sdxl.text_time && (!cond.text_embeds.defined() || !cond.time_ids.defined()))
    throw Error("stream: the UNet is SDXL's: the embeddings need text_embeds [1, " + std::to_string(sdxl.text_embeds_dim()) + "] and time_ids [1, 6]");
  const bool needs_uncond = config_.guidance_scale > 1 && (config_.cfg == CfgType::Full || config_.cfg == CfgType::Initialize);
  const auto& u = uncond.encoder_hidden_states;
  if (needs_uncond && (!u.defined() || u.sizes() != c.sizes() || uncond.text_embeds.defined() != cond.text_embeds.defined()))
    throw Error("stream: cfg full/initialize with guidance > 1 needs uncond embeddings shaped like cond");
  cond_ = std::move(cond);
  uncond_ = std::move(uncond);
}

void StreamDiffusion::set_controlnets(std::vector<ControlNetModel> controlnets) {
  controlnets_ = std::move(controlnets);
  control_ = torch::Tensor();
  control_scales_.assign(controlnets_.size(), 1.0);
}

void StreamDiffusion::set_control(torch::Tensor control, std::vector<double> scales) {
  if (scales.size() != controlnets_.size())
    throw Error("stream: " + std::to_string(scales.size()) + " ControlNet scales for " + std::to_string(controlnets_.size()) + " ControlNet(s)");
  const auto F = config_.frame_buffer_size;
  if (!control.defined() || control.dim() != 4 || (control.size(0) != 1 && control.size(0) != F))
    throw Error("stream: the control images must be [1 or " + std::to_string(F) + ", C, H, W]");
  control_ = std::move(control);
  control_scales_ = std::move(scales);
}

torch::Tensor StreamDiffusion::unet_rows(const torch::Tensor& x, const torch::Tensor& t, const UNetConditioning& ctx) {
  const auto& w = unet_->conv_in->weight;
  const auto xs = x.to(w.device(), w.scalar_type()), ts = t.to(w.device());
  const auto cs = ctx.to(w.device(), w.scalar_type());
  std::optional<UNetResiduals> residuals;
  for (std::size_t i = 0; i < controlnets_.size(); ++i) {
    if (control_scales_[i] == 0) continue;
    if (!control_.defined()) throw Error("stream: ControlNets are set but no control image (set_control)");
    // Rows are slot-major with the F frames of a slot together: a control batch of F tiles over them.
    auto r = controlnets_[i]->forward(xs, ts, cs, control_.to(w.device(), w.scalar_type()), control_scales_[i]).residuals;
    if (!residuals) {
      residuals = std::move(r);
      continue;
    }
    for (std::size_t k = 0; k < r.down.size(); ++k) residuals->down[k] = residuals->down[k] + r.down[k];
    residuals->mid = residuals->mid + r.mid;
  }
  return unet_->forward(xs, ts, cs, residuals ? &*residuals : nullptr).to(torch::kCPU, torch::kFloat32);
}

StreamDiffusion::Output StreamDiffusion::step(const torch::Tensor& input, const torch::Tensor& renoise) {
  torch::NoGradGuard no_grad;
  if (!cond_.encoder_hidden_states.defined()) throw Error("stream: set_embeddings() before step()");
  const auto n = slots(), F = config_.frame_buffer_size, rows = n * F;
  if (input.dim() != 4 || input.size(0) != F || input.sizes().slice(1) != noise_.sizes().slice(1))
    throw Error("stream: input must be [F, C, h, w] matching the noise shape");
  const auto z = input.to(torch::kFloat32);
  if (!config_.use_denoising_batch) return step_sequential(z, renoise);
  const auto N0 = noise_.narrow(0, 0, F);
  const bool residual = config_.cfg == CfgType::Self || config_.cfg == CfgType::Initialize;
  const bool guided = config_.cfg != CfgType::None && config_.guidance_scale > 1;
  const bool recursive = config_.rcfg_form == RcfgForm::Recursive;
  if (residual && config_.txt2img) throw Error("stream: cfg self/initialize need input latents; txt2img allows none or full");
  // Warmup "prime": every slot starts from the first input at its own noise level.
  if (calls_ == 0 && config_.warmup == Warmup::Prime && !config_.txt2img && n > 1) {
    const auto first = z.repeat({n - 1, 1, 1, 1});
    buffer_ = A_.narrow(0, F, rows - F) * first + B_.narrow(0, F, rows - F) * noise_.narrow(0, F, rows - F);
    refs_ = first.clone();
  }
  // 1-2. The entering rows join the buffer: X = [x_new; buffer]
  const auto x_new = config_.txt2img ? z : A_.narrow(0, 0, F) * z + B_.narrow(0, 0, F) * N0;
  const auto X = torch::cat({x_new, buffer_}, 0);
  torch::Tensor R;  // explicit form: reference latent of every row
  if (residual && !recursive) R = torch::cat({z, refs_}, 0);

  // 3. Recursive RCFG state: slot 0 starts from its own SDEdit noise, the rest shift down one slot.
  if (residual && recursive) stock_ = torch::cat({N0, stock_.narrow(0, 0, rows - F)}, 0);
  // Explicit form: the virtual residual noise of every row, (x - A R) / B.
  if (residual && !recursive) stock_ = (X - A_ * R) / B_;

  // 4-5. One UNet call for every slot (+ negative rows). v-prediction outputs become epsilon first
  // (eps = B x + A v), so guidance and RCFG work in one space for both kinds of model.
  const bool v_pred = scheduler_.config().prediction_type == "v_prediction";
  auto predict = [&](const torch::Tensor& x, const torch::Tensor& t, const UNetConditioning& ctx, const torch::Tensor& a, const torch::Tensor& b) {
    const auto out = unet_rows(x, t, ctx);
    return v_pred ? b * x + a * out : out;
  };
  const auto cond = cond_.expand(rows);
  torch::Tensor eps;
  if (guided && config_.cfg == CfgType::Full) {
    const auto pred = predict(torch::cat({X, X}), torch::cat({t_rows_, t_rows_}), cat_rows({uncond_.expand(rows), cond}),
                              torch::cat({A_, A_}), torch::cat({B_, B_}));
    const auto eps_u = pred.narrow(0, 0, rows), eps_c = pred.narrow(0, rows, rows);
    eps = eps_u + config_.guidance_scale * (eps_c - eps_u);
  } else if (guided && config_.cfg == CfgType::Initialize) {
    const auto pred = predict(torch::cat({X.narrow(0, 0, F), X}), torch::cat({t_rows_.narrow(0, 0, F), t_rows_}),
                              cat_rows({uncond_.expand(F), cond}), torch::cat({A_.narrow(0, 0, F), A_}), torch::cat({B_.narrow(0, 0, F), B_}));
    // The real negative pass on the newest rows: its x0 becomes their reference.
    const auto eps_u0 = pred.narrow(0, 0, F);
    stock_ = torch::cat({eps_u0, stock_.narrow(0, F, rows - F)});
    if (!recursive) R = torch::cat({(x_new - B_.narrow(0, 0, F) * eps_u0) / A_.narrow(0, 0, F), R.narrow(0, F, rows - F)});
    const auto eps_c = pred.narrow(0, F, rows), eps_u = config_.delta * stock_;
    eps = eps_u + config_.guidance_scale * (eps_c - eps_u);
  } else {
    const auto eps_c = predict(X, t_rows_, cond, A_, B_);
    if (guided && config_.cfg == CfgType::Self) {
      const auto eps_u = config_.delta * stock_;
      eps = eps_u + config_.guidance_scale * (eps_c - eps_u);
    } else {
      eps = eps_c;
    }
  }

  // 6. LCM step for every row with its slot's constants.
  const auto x0 = c_out_ * ((X - B_ * eps) / A_) + c_skip_ * X;

  // 7. Residual noise carried to the next slot (upstream's recursion; exact when c_skip = 0, c_out = 1).
  if (residual && recursive) {
    auto d = c_out_ * (B_ * stock_ - B_ * eps) / A_ + c_skip_ * B_ * stock_;
    const auto ones = torch::ones({F, 1, 1, 1});
    const auto a_next = torch::cat({A_.narrow(0, F, rows - F), ones}), b_next = torch::cat({B_.narrow(0, F, rows - F), ones});
    d = d * a_next / b_next;
    stock_ = torch::cat({noise_.narrow(0, F, rows - F), N0}) + d;
  }

  // 8. The oldest slot leaves; the others move one slot down, re-noised to the next level.
  Output out;
  out.latents = x0.narrow(0, rows - F, F);
  out.x0_batch = x0;
  if (n > 1) {
    const auto older = x0.narrow(0, 0, rows - F);
    buffer_ = A_.narrow(0, F, rows - F) * older;
    if (config_.do_add_noise) buffer_ = buffer_ + B_.narrow(0, F, rows - F) * noise_.narrow(0, F, rows - F);
  }
  if (residual && !recursive && n > 1) refs_ = R.narrow(0, 0, rows - F).clone();
  if (residual) out.stock = stock_.clone();
  out.valid = config_.warmup != Warmup::Suppress || calls_ >= n - 1;
  ++calls_;
  return out;
}

}  // namespace streamgen
