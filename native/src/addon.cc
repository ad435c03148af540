// linesight's native addon: GPIO character device, V4L2 capture, sd_notify, JPEG decode (when
// built with libjpeg), the inference worker's resize. Linux only.
#include "common.h"

namespace linesight {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  InitGpio(env, exports);
  InitV4l2(env, exports);
  InitNotify(env, exports);
  InitResize(env, exports);
#ifdef LINESIGHT_JPEG
  InitJpeg(env, exports);
#else
  Napi::Object jpeg = Napi::Object::New(env);
  jpeg.Set("available", false);
  jpeg.Set("reason",
           "the addon was built without libjpeg (jpeglib.h not found); install it (Debian: apt-get install "
           "libjpeg62-turbo-dev) and run npm run build:native");
  exports.Set("jpeg", jpeg);
#endif
  exports.Set("abi", Napi::Number::New(env, 1));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace linesight

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return linesight::Init(env, exports); }

NODE_API_MODULE(linesight_native, InitModule)
