package agent

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// rawCodec sends a []byte request as it is, so tests can send bytes no
// protobuf encoder would produce; it discards the response.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawCodec) Name() string                         { return "proto" }

func invokeRaw(c *apiv1.Client, method string, body []byte) error {
	var out []byte
	return c.Conn().Invoke(context.Background(), method, body, &out, grpc.ForceCodecV2(rawCodec{}))
}

// TestUndecodableRequests sends bytes that do not decode to the daemon: each
// is InvalidArgument (or ResourceExhausted when too large), never Internal,
// and the daemon keeps serving, its other services too.
func TestUndecodableRequests(t *testing.T) {
	_, _, c := serve(t) // the test runs as root: an executor
	build, err := proto.Marshal(&apiv1.BindBuildRequest{BuildId: "build-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		method string
		body   []byte
		want   codes.Code
	}{
		{"truncated varint", apiv1.Attestd_Attest_FullMethodName, []byte{0x0a, 0x80}, codes.InvalidArgument},
		{"truncated length", apiv1.Attestd_Attest_FullMethodName, []byte{0x0a, 0x05, 'a'}, codes.InvalidArgument},
		{"invalid wire type", apiv1.Attestd_Attest_FullMethodName, []byte{0x0f}, codes.InvalidArgument},
		{"end group without start", apiv1.Attestd_GetIdentity_FullMethodName, []byte{0x0c}, codes.InvalidArgument},
		{"field number 0", apiv1.Attestd_GetEventLog_FullMethodName, []byte{0x00, 0x00}, codes.InvalidArgument},
		{"invalid UTF-8 in build_id", apiv1.Attestd_BindBuild_FullMethodName, []byte{0x0a, 0x02, 0xc3, 0x28}, codes.InvalidArgument},
		{"oversized", apiv1.Attestd_Attest_FullMethodName, append([]byte{0x0a, 0x80, 0x80, 0x80, 0x01}, make([]byte, 2<<20)...), codes.ResourceExhausted},
		// Decodable requests still reach the service.
		{"unknown field", apiv1.Attestd_GetIdentity_FullMethodName, []byte{0xf8, 0x01, 0x01}, codes.OK},
		{"mismatched wire type is an unknown field", apiv1.Attestd_Attest_FullMethodName, []byte{0x08, 0x01}, codes.InvalidArgument}, // empty nonce
		{"valid", apiv1.Attestd_BindBuild_FullMethodName, build, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := invokeRaw(c, tc.method, tc.body)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("%s: got %v, want %v", tc.method, err, tc.want)
			}
		})
	}

	// Every method of the service: bytes that decode as no message.
	for _, m := range apiv1.Attestd_ServiceDesc.Methods {
		method := "/" + apiv1.Attestd_ServiceDesc.ServiceName + "/" + m.MethodName
		if err := invokeRaw(c, method, []byte{0x0f}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", method, err)
		}
	}

	// Still serving: the API, health (unary and a stream) and reflection,
	// which the server codec decodes as it always did.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{}); err != nil {
		t.Fatalf("GetIdentity after undecodable requests: %v", err)
	}
	hc := healthpb.NewHealthClient(c.Conn())
	if h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: apiv1.Attestd_ServiceDesc.ServiceName}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v", h, err)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: apiv1.Attestd_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := w.Recv(); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health watch: %v %v", h, err)
	}
	rc, err := reflectionpb.NewServerReflectionClient(c.Conn()).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	found := false
	for _, s := range resp.GetListServicesResponse().GetService() {
		found = found || s.GetName() == apiv1.Attestd_ServiceDesc.ServiceName
	}
	if !found {
		t.Errorf("reflection lists %v, not %s", resp.GetListServicesResponse().GetService(), apiv1.Attestd_ServiceDesc.ServiceName)
	}
	// Other services decode as before: an error (grpc-go's Internal), not a
	// silently empty request (which would ask for the overall status).
	if err := invokeRaw(c, "/grpc.health.v1.Health/Check", []byte{0x0f}); status.Code(err) == codes.OK {
		t.Error("health check with undecodable bytes succeeded")
	}
}

// TestDecodeCheckOrder: the caller check runs before the decoding check, so
// a stranger learns nothing from sending garbage; without an interceptor the
// error is still InvalidArgument and the service is not called.
func TestDecodeCheckOrder(t *testing.T) {
	var h grpc.MethodHandler
	for _, m := range decodeChecked(&apiv1.Attestd_ServiceDesc).Methods {
		if m.MethodName == "Attest" {
			h = m.Handler
		}
	}
	codec := newServerCodec()
	dec := func(m any) error { return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0f})}, m) }
	srv := &service{} // a call would panic: no agent

	refuse := func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
		return nil, toStatus(errPermission)
	}
	if _, err := h(srv, context.Background(), dec, refuse); status.Code(err) != codes.PermissionDenied {
		t.Errorf("refusing interceptor: %v, want PermissionDenied", err)
	}
	var inner error
	pass := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		_, inner = next(ctx, req)
		return nil, toStatus(inner)
	}
	if _, err := h(srv, context.Background(), dec, pass); status.Code(err) != codes.InvalidArgument || !errors.Is(inner, errInput) {
		t.Errorf("passing interceptor: %v (handler returned %v), want InvalidArgument", err, inner)
	}
	// The message names the method, says the request did not decode and
	// gives the decoder's reason.
	reason := proto.Unmarshal([]byte{0x0f}, &apiv1.AttestRequest{})
	want := "invalid request: /attestd.v1.Attestd/Attest: the request did not decode as attestd.v1.AttestRequest: " + reason.Error()
	if _, err := h(srv, context.Background(), dec, pass); status.Convert(err).Message() != want || !errors.Is(inner, reason) {
		t.Errorf("message %q, want %q", status.Convert(err).Message(), want)
	}
	if _, err := h(srv, context.Background(), dec, nil); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no interceptor: %v, want InvalidArgument", err)
	}
	// Errors other than decoding ones pass through unchanged.
	tooBig := status.Error(codes.ResourceExhausted, "too big")
	if _, err := h(srv, context.Background(), func(any) error { return tooBig }, pass); err != tooBig {
		t.Errorf("receive error: %v, want %v", err, tooBig)
	}
}

// TestServiceIsUnary: decodeChecked wraps unary methods only; a streaming
// method would decode its requests unchecked (Internal again).
func TestServiceIsUnary(t *testing.T) {
	if s := apiv1.Attestd_ServiceDesc.Streams; len(s) != 0 {
		t.Fatalf("attestd has streaming methods %v: make decodeChecked wrap their receives too", s)
	}
}
