// JPEG decode with libjpeg-turbo, synchronous on purpose: it is called from an inference worker
// thread (camera.replay.decodeIn: worker), where blocking is the point. That thread then decodes,
// preprocesses and infers one part after the other on its own core; an asynchronous decode (sharp,
// on a libuv thread) left the worker idle while a third thread competed with the two sessions
// (docs/performance.md). Do not call it from the main thread on a line.
//
// decode(data, { colour, fit, maxPixels }): colour 'gray' | 'rgb'; fit { width, height, inside }
// picks libjpeg's DCT scaling (1/1, 1/2, 1/4, 1/8), the smallest that still covers it; the EXIF
// orientation is applied (sharp's autoOrient). Returns { width, height, channels, data, scale,
// orientation }, data a Uint8Array over a fresh ArrayBuffer (transferable). Throws an Error naming
// the problem; libjpeg's warnings (truncated or damaged data) are errors too.
//
// Built only when jpeglib.h is found (binding.gyp defines LINESIGHT_JPEG).
#include <csetjmp>
#include <cstdio>
#include <vector>

#include <jpeglib.h>

#include "common.h"

#define LINESIGHT_STR2(x) #x
#define LINESIGHT_STR(x) LINESIGHT_STR2(x)
#ifdef LIBJPEG_TURBO_VERSION
#define LIBJPEG_NAME "libjpeg-turbo " LINESIGHT_STR(LIBJPEG_TURBO_VERSION)
#else
#define LIBJPEG_NAME "libjpeg " LINESIGHT_STR(JPEG_LIB_VERSION)
#endif

namespace linesight {
namespace {

struct ErrorMgr {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnError(j_common_ptr c) {
  auto* e = reinterpret_cast<ErrorMgr*>(c->err);
  c->err->format_message(c, e->message);
  longjmp(e->jump, 1);
}

// Warnings ("Premature end of JPEG file", "Corrupt JPEG data: ...") are errors: half a part filled
// with grey must not be judged (sharp's failOn 'warning', as the replay camera decodes).
void OnMessage(j_common_ptr c, int level) {
  if (level < 0) OnError(c);
}

/** EXIF orientation (1..8) from an APP1 "Exif" marker, 1 when absent or unreadable. */
int Orientation(j_decompress_ptr cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    const uint8_t* p = m->data;
    size_t n = m->data_length;
    if (m->marker != JPEG_APP0 + 1 || n < 14 || std::memcmp(p, "Exif\0\0", 6) != 0) continue;
    const uint8_t* t = p + 6;  // TIFF header
    n -= 6;
    bool le = t[0] == 'I';
    auto u16 = [&](size_t o) { return o + 2 > n ? 0u : le ? t[o] | t[o + 1] << 8 : t[o] << 8 | t[o + 1]; };
    auto u32 = [&](size_t o) { return o + 4 > n ? 0u : le ? u16(o) | u16(o + 2) << 16 : u16(o) << 16 | u16(o + 2); };
    size_t ifd = u32(4);
    unsigned count = u16(ifd);
    for (unsigned i = 0; i < count; i++) {
      size_t e = ifd + 2 + 12 * size_t(i);
      if (u16(e) == 0x0112) {
        unsigned v = u16(e + 8);
        return v >= 1 && v <= 8 ? int(v) : 1;
      }
    }
  }
  return 1;
}

/**
 * libjpeg state. Start() and Read() hold the setjmp: libjpeg's errors longjmp back into them, over
 * libjpeg's own C frames only (no C++ object lives between a setjmp and its longjmp).
 */
class Decoder {
 public:
  Decoder() {
    cinfo.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = OnError;
    err_.pub.emit_message = OnMessage;
  }
  ~Decoder() { jpeg_destroy_decompress(&cinfo); }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  const char* error() const { return err_.message; }

  /** Header, scale, colour; then the output size is known. False: error() says why. */
  bool Start(const uint8_t* data, size_t len, bool gray, int fitW, int fitH, bool inside, double maxPixels) {
    if (setjmp(err_.jump)) return false;
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(len));
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    orientation = Orientation(&cinfo);
    const double w = cinfo.image_width, h = cinfo.image_height;
    if (w * h > maxPixels) return Fail("image larger than the decode limit (%g megapixels)", maxPixels / 1e6);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
      return Fail("CMYK JPEG: not supported by the native decoder (camera.replay.decodeIn: main decodes it)");
    }
    // The smallest scale 1/d that still covers the target: the image is at least d times it on
    // both sides (on one when fitting inside), compared as shown (after the EXIF rotation). sharp's
    // shrink-on-load also steps back a scale when its shrink's integer part is d; callers wanting
    // room for their own resize ask for a larger target.
    const bool turned = orientation >= 5;
    const double iw = turned ? h : w, ih = turned ? w : h;
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    for (unsigned d = 8; fitW > 0 && fitH > 0 && d > 1; d /= 2) {
      bool wide = iw >= double(fitW) * d, tall = ih >= double(fitH) * d;
      if (inside ? (wide || tall) : (wide && tall)) {
        cinfo.scale_denom = d;
        break;
      }
    }
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    return true;
  }

  /** Decodes every row into `out` (output_width * output_components bytes a row). */
  bool Read(uint8_t* out) {
    if (setjmp(err_.jump)) return false;
    const size_t stride = size_t(cinfo.output_width) * cinfo.output_components;
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = out + size_t(cinfo.output_scanline) * stride;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    return true;
  }

  jpeg_decompress_struct cinfo{};
  int orientation = 1;

 private:
  template <typename... A>
  bool Fail(const char* fmt, A... args) {
    std::snprintf(err_.message, sizeof err_.message, fmt, args...);
    return false;
  }
  ErrorMgr err_{};
};

/** `src` (w x h x c) as the EXIF orientation says it is to be seen, into `dst`. */
void Orient(const uint8_t* src, uint8_t* dst, int w, int h, int c, int o) {
  const int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
  for (int y = 0; y < oh; y++) {
    for (int x = 0; x < ow; x++) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = w - 1 - x; break;                    // mirrored
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;    // 180°
        case 4: sy = h - 1 - y; break;                    // flipped
        case 5: sx = y; sy = x; break;                    // transposed
        case 6: sx = y; sy = h - 1 - x; break;            // 90° clockwise to view
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;    // transversed
        case 8: sx = w - 1 - y; sy = x; break;            // 90° anticlockwise to view
      }
      std::memcpy(dst + (size_t(y) * ow + x) * c, src + (size_t(sy) * w + sx) * c, c);
    }
  }
}

Napi::Value Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "jpeg.decode(data: Uint8Array, opts?: { colour, fit, maxPixels })");
  }
  auto bytes = info[0].As<Napi::Uint8Array>();
  Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  const std::string colour = GetString(opts, "colour", "rgb");
  if (colour != "gray" && colour != "rgb") throw Napi::TypeError::New(env, "colour must be 'gray' or 'rgb'");
  int fitW = 0, fitH = 0;
  bool inside = false;
  Napi::Value fit = opts.Get("fit");
  if (fit.IsObject()) {
    Napi::Object f = fit.As<Napi::Object>();
    fitW = int(GetInt(f, "width", 0));
    fitH = int(GetInt(f, "height", 0));
    inside = GetBool(f, "inside", false);
  }
  const double maxPixels = double(GetInt(opts, "maxPixels", 40000000));

  const uint8_t* data = bytes.Data();
  const size_t len = bytes.ByteLength();
  if (len == 0) throw Napi::Error::New(env, "not a JPEG: no data");
  if (len < 3 || data[0] != 0xff || data[1] != 0xd8 || data[2] != 0xff) {
    char head[16] = "";
    for (size_t i = 0, n = 0; i < len && i < 4; i++) n += std::snprintf(head + n, sizeof head - n, "%s%02x", i ? " " : "", data[i]);
    throw Napi::Error::New(env, std::string("not a JPEG: the data starts with ") + head + ", not the JPEG start marker ff d8 ff");
  }

  Decoder d;
  if (!d.Start(data, len, colour == "gray", fitW, fitH, inside, maxPixels)) throw Napi::Error::New(env, std::string("JPEG: ") + d.error());
  const int w = int(d.cinfo.output_width), h = int(d.cinfo.output_height), c = d.cinfo.output_components;
  const size_t size = size_t(w) * h * c;
  Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, size);
  // Decoded straight into the JS buffer, or into a scratch one to be turned as EXIF says.
  std::vector<uint8_t> scratch(d.orientation == 1 ? 0 : size);
  uint8_t* rows = d.orientation == 1 ? static_cast<uint8_t*>(out.Data()) : scratch.data();
  if (!d.Read(rows)) throw Napi::Error::New(env, std::string("JPEG: ") + d.error());
  if (d.orientation != 1) Orient(scratch.data(), static_cast<uint8_t*>(out.Data()), w, h, c, d.orientation);

  const bool turned = d.orientation >= 5;
  Napi::Object r = Napi::Object::New(env);
  r.Set("width", turned ? h : w);
  r.Set("height", turned ? w : h);
  r.Set("channels", c);
  r.Set("data", Napi::Uint8Array::New(env, size, out, 0));
  r.Set("scale", Napi::Number::New(env, d.cinfo.scale_denom));
  r.Set("orientation", d.orientation);
  return r;
}

}  // namespace

void InitJpeg(Napi::Env env, Napi::Object exports) {
  Napi::Object j = Napi::Object::New(env);
  j.Set("available", true);
  j.Set("version", LIBJPEG_NAME);
  j.Set("decode", Napi::Function::New(env, Decode, "decode"));
  exports.Set("jpeg", j);
}

}  // namespace linesight
