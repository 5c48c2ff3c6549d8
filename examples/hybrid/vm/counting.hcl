# The counting service on a VM: put this file in the agent's config dir
# (/etc/weft.d on a VM installed with deploy/vm/install.sh) and reload.
# The agent runs a sidecar for it; other services reach it through theirs.
service {
  name = "counting"
  port = 9003
  connect {
    sidecar_service {}
  }
  check {
    id       = "counting-http"
    name     = "counting answers"
    http     = "http://127.0.0.1:9003/"
    interval = "5s"
  }
}
