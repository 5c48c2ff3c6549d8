# A VM service (frontend) that calls the dashboard (which runs in a pod) through its
# sidecar: the dashboard is on 127.0.0.1:9192 for it.
service {
  name = "frontend"
  port = 9004
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "dashboard", local_bind_port = 9192 }]
      }
    }
  }
}
