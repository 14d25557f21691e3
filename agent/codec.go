package agent

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protov2 "google.golang.org/protobuf/proto"
)

// An undecodable request must be InvalidArgument, but grpc-go reports every
// codec error as Internal, and the generated handlers decode before any
// interceptor runs. So the attestd service's handlers are wrapped
// (decodeChecked): each decodes into a decodeTarget, which serverCodec fills
// with the message and the decoder's error instead of failing; the error is
// then returned from inside the interceptor chain, after the caller check,
// and statusCode maps it (errInput). Nothing is kept beyond the call: the
// error lives in the call's own decodeTarget, and other services (health,
// reflection, their streams) never see one.

// serverCodec is the proto codec, given to the attestd server only (never
// registered globally), that understands decodeTarget.
type serverCodec struct{ base encoding.CodecV2 }

func newServerCodec() serverCodec {
	return serverCodec{base: encoding.GetCodecV2(proto.Name)}
}

// decodeTarget asks serverCodec to decode into msg and to record, not
// return, the decoder's error.
type decodeTarget struct {
	msg any
	err error
}

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if t, ok := v.(*decodeTarget); ok {
		t.err = c.base.Unmarshal(data, t.msg)
		return nil
	}
	return c.base.Unmarshal(data, v)
}

func (c serverCodec) Name() string { return c.base.Name() }

// decodeChecked returns a copy of desc whose unary handlers turn a request
// that does not decode into an errInput error naming the method, the message
// type and the decoder's reason. The error is returned by the innermost
// handler, so the interceptors (the caller check) run first: a stranger gets
// PermissionDenied whatever it sends. Streaming methods are not wrapped
// (attestd has none; TestServiceIsUnary keeps it so).
func decodeChecked(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		m.Handler = checkDecode("/"+desc.ServiceName+"/"+m.MethodName, m.Handler)
		d.Methods[i] = m
	}
	return &d
}

// checkDecode wraps the handler of method (see decodeChecked).
func checkDecode(method string, h grpc.MethodHandler) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		var bad error
		decode := func(m any) error {
			t := decodeTarget{msg: m}
			if err := dec(&t); err != nil {
				return err // not a decoding error: transport, size limit, cancellation
			}
			if t.err != nil {
				bad = fmt.Errorf("%w: %s: the request did not decode as %s: %w", errInput, method, messageName(m), t.err)
			}
			return nil
		}
		// The generated handler calls the interceptor with its own handler
		// (the service method); put the decoding check in front of that.
		chain := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			if icpt == nil {
				if bad != nil {
					return nil, toStatus(bad)
				}
				return next(ctx, req)
			}
			guarded := func(ctx context.Context, req any) (any, error) {
				if bad != nil {
					return nil, bad
				}
				return next(ctx, req)
			}
			return icpt(ctx, req, info, guarded)
		}
		return h(srv, ctx, decode, chain)
	}
}

func messageName(m any) string {
	if pm, ok := m.(protov2.Message); ok {
		return string(pm.ProtoReflect().Descriptor().FullName())
	}
	return fmt.Sprintf("%T", m)
}
