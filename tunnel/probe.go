package tunnel

// Probes are a pod's probes and lifecycle hooks, as the provider stages
// them (JSON, fetch/layout.StagedProbes) for the agent, which runs them
// beside the containers, as a kubelet runs them beside its own. Ports are
// numbers here: the provider resolves named ports.
type Probes struct {
	Containers []ContainerProbes `json:"containers"`
}

// ContainerProbes is one container's.
type ContainerProbes struct {
	Name      string   `json:"name"`
	Startup   *Probe   `json:"startup,omitempty"`
	Liveness  *Probe   `json:"liveness,omitempty"`
	Readiness *Probe   `json:"readiness,omitempty"`
	PostStart *Handler `json:"postStart,omitempty"`
	// Grace is the pod's termination grace period in seconds: how long a
	// container killed for a failed probe or hook has after its TERM.
	Grace int `json:"grace"`
}

// Probe is a corev1.Probe with the API server's defaults applied.
type Probe struct {
	Handler
	InitialDelay     int `json:"initialDelay,omitempty"`
	Period           int `json:"period"`
	Timeout          int `json:"timeout"`
	SuccessThreshold int `json:"successThreshold"`
	FailureThreshold int `json:"failureThreshold"`
	// Grace, when set, replaces the pod's for a kill this probe causes.
	Grace *int `json:"grace,omitempty"`
}

// Handler is what a probe or hook does: exactly one of its fields.
type Handler struct {
	Exec  []string  `json:"exec,omitempty"`
	HTTP  *HTTPGet  `json:"http,omitempty"`
	TCP   *TCPProbe `json:"tcp,omitempty"`
	GRPC  *GRPCGet  `json:"grpc,omitempty"`
	Sleep int       `json:"sleep,omitempty"` // seconds (hooks only)
}

// HTTPGet is an HTTP GET: success is a status in [200, 400).
type HTTPGet struct {
	Scheme  string      `json:"scheme"` // HTTP or HTTPS (not verified, as a kubelet)
	Host    string      `json:"host,omitempty"`
	Port    int         `json:"port"`
	Path    string      `json:"path,omitempty"`
	Headers [][2]string `json:"headers,omitempty"`
}

// TCPProbe succeeds when a connection opens.
type TCPProbe struct {
	Host string `json:"host,omitempty"`
	Port int    `json:"port"`
}

// GRPCGet is the gRPC health checking protocol's Check.
type GRPCGet struct {
	Port    int    `json:"port"`
	Service string `json:"service,omitempty"`
}
