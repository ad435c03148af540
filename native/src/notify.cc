// sd_notify(3) without libsystemd: one datagram to the unix socket named by $NOTIFY_SOCKET
// ('/run/systemd/notify', or '@name' for an abstract socket). systemd reads the sender's
// credentials from the socket (SO_PASSCRED), so the agent's own pid is the one it sees (a spawned
// systemd-notify needs NotifyAccess=all; this does not).
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>

#include "common.h"

namespace linesight {
namespace {

/** notify(state: string, socketPath?: string): true when sent, false when there is no socket. */
Napi::Value Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "notify(state: string, socketPath?: string)");
  std::string state = info[0].As<Napi::String>().Utf8Value();
  std::string path;
  if (info.Length() > 1 && info[1].IsString()) {
    path = info[1].As<Napi::String>().Utf8Value();
  } else {
    const char* e = std::getenv("NOTIFY_SOCKET");
    path = e ? e : "";
  }
  if (path.empty()) return Napi::Boolean::New(env, false);

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socklen_t len;
  if (path[0] == '@') {
    if (path.size() > sizeof addr.sun_path) ThrowSys(env, Sys("sd_notify", path, ENAMETOOLONG));
    addr.sun_path[0] = '\0';
    std::memcpy(addr.sun_path + 1, path.data() + 1, path.size() - 1);
    len = socklen_t(offsetof(sockaddr_un, sun_path) + path.size());
  } else if (path[0] == '/') {
    if (path.size() >= sizeof addr.sun_path) ThrowSys(env, Sys("sd_notify", path, ENAMETOOLONG));
    std::memcpy(addr.sun_path, path.data(), path.size());
    len = socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  } else {
    ThrowSys(env, Sys("sd_notify", path, EAFNOSUPPORT, "NOTIFY_SOCKET must be an absolute path or '@abstract' name"));
  }
  Fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) ThrowSys(env, Sys("socket", path));
  ssize_t n;
  do {
    n = ::sendto(s.get(), state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&addr), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowSys(env, Sys("sendto", path));
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("notify", Napi::Function::New(env, Notify, "notify"));
}

}  // namespace linesight
