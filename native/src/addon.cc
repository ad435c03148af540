// linesight's native addon: GPIO character device, V4L2 capture, sd_notify. Linux only.
#include "common.h"

namespace linesight {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  InitGpio(env, exports);
  InitV4l2(env, exports);
  InitNotify(env, exports);
  exports.Set("abi", Napi::Number::New(env, 1));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace linesight

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return linesight::Init(env, exports); }

NODE_API_MODULE(linesight_native, InitModule)
