// Package vpc stands in for go.opentelemetry.io/contrib/detectors/ibmcloud/vpc: its detector finds nothing.
package vpc

import (
	"context"

	"go.opentelemetry.io/otel/sdk/resource"
)

type detector struct{}

// Detect reports an empty resource: this cloud is never detected in kvtrace builds.
func (detector) Detect(context.Context) (*resource.Resource, error) { return resource.Empty(), nil }

// Option configures the detector (accepted and ignored).
type Option func()

// WithProtocol is accepted for API compatibility and ignored.
func WithProtocol(string) Option { return func() {} }

// NewResourceDetector returns a detector that finds nothing.
func NewResourceDetector(...Option) resource.Detector { return detector{} }
