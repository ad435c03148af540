// Crop + resize + letterbox of an 8-bit HWC frame to a model input, synchronous on purpose: like
// jpeg.decode it runs on an inference worker thread (camera.replay.decodeIn: worker), which then
// decodes, prepares and infers each part in turn instead of idling while sharp works on a libuv
// thread (docs/performance.md). Needs no library: always built.
//
// resize(data, { width, height, channels, crop: { x, y, width, height }, scaledWidth, scaledHeight,
//                outWidth, outHeight, padX, padY, fill }) -> Uint8Array (a fresh, transferable
// ArrayBuffer of outWidth x outHeight x channels): the crop, resized to scaledWidth x scaledHeight,
// placed at (padX, padY) on a `fill` background.
//
// The resize is what src/inference/preprocess.ts gets from sharp's resize(w, h, { fit: 'fill',
// kernel: 'linear' }), i.e. libvips' vips_resize (8.18, as bundled with sharp 0.35) for uchar:
//  - per axis, downsizing: a box shrink by the integer part of shrink / 2 (libvips' reduce "gap"
//    of 2; the last box extends the edge pixel), then a triangle (linear) filter whose support is
//    the remaining shrink, so downscaling is antialiased: 2 * rint(shrink) + 1 taps, the sub-pixel
//    phase quantised to 1/64, weights normalised then truncated to 12-bit fixed point, edge pixels
//    repeated; vertical first, each pass rounded to 8 bits;
//  - upsizing (either axis): bilinear at x / scale - 0.5 on both axes (libvips' affine with a
//    0.5 input displacement; an axis not enlarged moves by half a pixel too), edges repeated.
// Downscaling is bit-exact with sharp; upscaling within one level (test/unit/resize.test.ts).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace linesight {
namespace {

constexpr int kShift = 12;  // VIPS_INTERPOLATE_SHIFT
constexpr int kScale = 1 << kShift;

/** One axis's downsize, n input pixels to `out`: box shrink by k, then `taps` taps per output. */
struct AxisPlan {
  int k = 1;       // integer box shrink (1 = none)
  int boxed = 0;   // size after the box shrink
  int out = 0;
  int taps = 0;    // 0 = no reduce after the box shrink
  std::vector<int> index;  // out * taps input positions (edge-clamped)
  std::vector<int> coef;   // out * taps weights, sum ~ kScale
};

AxisPlan PlanAxis(int n, int target) {
  AxisPlan p;
  // sharp passes 1 / (n / target) to vips_resize, which passes 1 / that to reduce.
  double shrink = 1.0 / (1.0 / (double(n) / target));
  p.out = int(double(n) / shrink + 0.5);
  double extra = p.out * shrink - n;
  p.k = std::max(1, int(std::floor(double(n) / p.out / 2.0)));
  p.boxed = n;
  if (p.k > 1) {
    p.boxed = int(std::ceil(double(n) / p.k));
    shrink /= p.k;
    extra /= p.k;
  }
  if (shrink == 1.0) return p;
  p.taps = 2 * int(std::rint(shrink)) + 1;
  const int half = p.taps / 2;
  const double hoffset = (1 + extra) / 2.0 - 1;
  double X = 0.5 * shrink - 0.5 - hoffset;
  p.index.resize(size_t(p.out) * p.taps);
  p.coef.resize(size_t(p.out) * p.taps);
  std::vector<double> c(p.taps);
  for (int x = 0; x < p.out; x++, X += shrink) {
    const int ix = int(X);
    const int tx = ((int(X * 128) & 127) + 1) >> 1;  // the phase, in 64ths
    const double centre = tx / 64.0 + p.taps / 2.0 - 1;
    double sum = 0;
    for (int i = 0; i < p.taps; i++) {
      c[i] = std::max(0.0, 1.0 - std::fabs((i - centre) / shrink));
      sum += c[i];
    }
    for (int i = 0; i < p.taps; i++) {
      p.index[size_t(x) * p.taps + i] = std::clamp(ix - half + i, 0, p.boxed - 1);
      p.coef[size_t(x) * p.taps + i] = int(c[i] / sum * kScale);
    }
  }
  return p;
}

inline uint8_t Clip(int v) { return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v); }

/** An HWC image; `p` points at pixel (0, 0), rows `stride` bytes apart. */
struct View {
  const uint8_t* p;
  int w, h, c;
  size_t stride;
};

struct Image {
  std::vector<uint8_t> px;
  int w = 0, h = 0, c = 0;
  View view() const { return {px.data(), w, h, c, size_t(w) * c}; }
};

Image ShrinkV(const View& in, const AxisPlan& a) {
  Image o{std::vector<uint8_t>(size_t(in.w) * a.boxed * in.c), in.w, a.boxed, in.c};
  const size_t row = size_t(in.w) * in.c;
  std::vector<int> acc(row);
  for (int y = 0; y < a.boxed; y++) {
    std::fill(acc.begin(), acc.end(), 0);
    for (int j = 0; j < a.k; j++) {
      const uint8_t* s = in.p + size_t(std::min(in.h - 1, y * a.k + j)) * in.stride;
      for (size_t i = 0; i < row; i++) acc[i] += s[i];
    }
    uint8_t* d = o.px.data() + size_t(y) * row;
    for (size_t i = 0; i < row; i++) d[i] = uint8_t((acc[i] + a.k / 2) / a.k);
  }
  return o;
}

Image ReduceV(const View& in, const AxisPlan& a) {
  Image o{std::vector<uint8_t>(size_t(in.w) * a.out * in.c), in.w, a.out, in.c};
  const size_t row = size_t(in.w) * in.c;
  std::vector<int> acc(row);
  for (int y = 0; y < a.out; y++) {
    std::fill(acc.begin(), acc.end(), 0);
    for (int t = 0; t < a.taps; t++) {
      const int cf = a.coef[size_t(y) * a.taps + t];
      if (cf == 0) continue;
      const uint8_t* s = in.p + size_t(a.index[size_t(y) * a.taps + t]) * in.stride;
      for (size_t i = 0; i < row; i++) acc[i] += cf * s[i];
    }
    uint8_t* d = o.px.data() + size_t(y) * row;
    for (size_t i = 0; i < row; i++) d[i] = Clip((acc[i] + kScale / 2) >> kShift);
  }
  return o;
}

Image ShrinkH(const View& in, const AxisPlan& a) {
  const int c = in.c;
  Image o{std::vector<uint8_t>(size_t(a.boxed) * in.h * c), a.boxed, in.h, c};
  for (int y = 0; y < in.h; y++) {
    const uint8_t* s = in.p + size_t(y) * in.stride;
    uint8_t* d = o.px.data() + size_t(y) * a.boxed * c;
    for (int x = 0; x < a.boxed; x++) {
      for (int b = 0; b < c; b++) {
        int sum = 0;
        for (int j = 0; j < a.k; j++) sum += s[size_t(std::min(in.w - 1, x * a.k + j)) * c + b];
        d[size_t(x) * c + b] = uint8_t((sum + a.k / 2) / a.k);
      }
    }
  }
  return o;
}

Image ReduceH(const View& in, const AxisPlan& a) {
  const int c = in.c;
  Image o{std::vector<uint8_t>(size_t(a.out) * in.h * c), a.out, in.h, c};
  for (int y = 0; y < in.h; y++) {
    const uint8_t* s = in.p + size_t(y) * in.stride;
    uint8_t* d = o.px.data() + size_t(y) * a.out * c;
    for (int x = 0; x < a.out; x++) {
      const int* idx = &a.index[size_t(x) * a.taps];
      const int* cf = &a.coef[size_t(x) * a.taps];
      for (int b = 0; b < c; b++) {
        int sum = 0;
        for (int t = 0; t < a.taps; t++) sum += cf[t] * s[size_t(idx[t]) * c + b];
        d[size_t(x) * c + b] = Clip((sum + kScale / 2) >> kShift);
      }
    }
  }
  return o;
}

/** Enlarges either axis (the other keeps its size), bilinear at x / scale - 0.5 as libvips' affine. */
Image Enlarge(const View& in, int tw, int th) {
  const int c = in.c;
  Image o{std::vector<uint8_t>(size_t(tw) * th * c), tw, th, c};
  const double sx = double(tw) / in.w, sy = double(th) / in.h;
  std::vector<int> x0(tw), x1(tw);
  std::vector<double> fx(tw);
  for (int x = 0; x < tw; x++) {
    const double X = x / sx - 0.5;
    const int i = int(std::floor(X));
    fx[x] = X - i;
    x0[x] = std::clamp(i, 0, in.w - 1) * c;
    x1[x] = std::clamp(i + 1, 0, in.w - 1) * c;
  }
  for (int y = 0; y < th; y++) {
    const double Y = y / sy - 0.5;
    const int j = int(std::floor(Y));
    const double fy = Y - j;
    const uint8_t* r0 = in.p + size_t(std::clamp(j, 0, in.h - 1)) * in.stride;
    const uint8_t* r1 = in.p + size_t(std::clamp(j + 1, 0, in.h - 1)) * in.stride;
    uint8_t* d = o.px.data() + size_t(y) * tw * c;
    for (int x = 0; x < tw; x++) {
      const double f = fx[x];
      for (int b = 0; b < c; b++) {
        const double top = r0[x0[x] + b] * (1 - f) + r0[x1[x] + b] * f;
        const double bot = r1[x0[x] + b] * (1 - f) + r1[x1[x] + b] * f;
        d[size_t(x) * c + b] = uint8_t(std::lround(top * (1 - fy) + bot * fy));
      }
    }
  }
  return o;
}

int Need(Napi::Env env, Napi::Object o, const char* key, int lo, int hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("resize: ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d)) {
    throw Napi::RangeError::New(env, std::string("resize: ") + key + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return int(d);
}

Napi::Value Resize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || !info[1].IsObject()) {
    throw Napi::TypeError::New(env, "resize(data: Uint8Array, opts: { width, height, channels, crop, scaledWidth, scaledHeight, outWidth, outHeight, padX, padY, fill })");
  }
  auto data = info[0].As<Napi::Uint8Array>();
  Napi::Object o = info[1].As<Napi::Object>();
  constexpr int kMaxSide = 32768;
  const int w = Need(env, o, "width", 1, kMaxSide), h = Need(env, o, "height", 1, kMaxSide), c = Need(env, o, "channels", 1, 4);
  if (data.ByteLength() != size_t(w) * h * c) throw Napi::RangeError::New(env, "resize: data is not width x height x channels bytes");
  Napi::Value cv = o.Get("crop");
  if (!cv.IsObject()) throw Napi::TypeError::New(env, "resize: crop must be { x, y, width, height }");
  Napi::Object crop = cv.As<Napi::Object>();
  const int cx = Need(env, crop, "x", 0, w - 1), cy = Need(env, crop, "y", 0, h - 1);
  const int cw = Need(env, crop, "width", 1, w - cx), ch = Need(env, crop, "height", 1, h - cy);
  const int ow = Need(env, o, "outWidth", 1, kMaxSide), oh = Need(env, o, "outHeight", 1, kMaxSide);
  const int sw = Need(env, o, "scaledWidth", 1, ow), sh = Need(env, o, "scaledHeight", 1, oh);
  const int px = Need(env, o, "padX", 0, ow - sw), py = Need(env, o, "padY", 0, oh - sh);
  const int fill = Need(env, o, "fill", 0, 255);

  const size_t stride = size_t(w) * c;
  View v{data.Data() + size_t(cy) * stride + size_t(cx) * c, cw, ch, c, stride};
  Image a, b;  // the passes' results (v points into the last one)
  if (sh < v.h) {
    AxisPlan p = PlanAxis(v.h, sh);
    if (p.k > 1) a = ShrinkV(v, p), v = a.view();
    if (p.taps) b = ReduceV(v, p), v = b.view();
  }
  if (sw < v.w) {
    AxisPlan p = PlanAxis(v.w, sw);
    if (p.k > 1) a = ShrinkH(v, p), v = a.view();
    if (p.taps) b = ReduceH(v, p), v = b.view();
  }
  if (sw > v.w || sh > v.h) a = Enlarge(v, sw, sh), v = a.view();
  if (v.w != sw || v.h != sh) throw Napi::Error::New(env, "resize: produced " + std::to_string(v.w) + "x" + std::to_string(v.h) + " for " + std::to_string(sw) + "x" + std::to_string(sh));

  const size_t size = size_t(ow) * oh * c;
  Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, size);
  uint8_t* d = static_cast<uint8_t*>(out.Data());
  if (sw != ow || sh != oh) std::memset(d, fill, size);
  for (int y = 0; y < sh; y++) std::memcpy(d + (size_t(py + y) * ow + px) * c, v.p + size_t(y) * v.stride, size_t(sw) * c);
  return Napi::Uint8Array::New(env, size, out, 0);
}

}  // namespace

void InitResize(Napi::Env env, Napi::Object exports) { exports.Set("resize", Napi::Function::New(env, Resize, "resize")); }

}  // namespace linesight
