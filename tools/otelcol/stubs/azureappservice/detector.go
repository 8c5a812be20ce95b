// Package azureappservice stands in for go.opentelemetry.io/contrib/detectors/azure/azureappservice: its detector finds nothing.
package azureappservice

import (
	"context"

	"go.opentelemetry.io/otel/sdk/resource"
)

type detector struct{}

// Detect reports an empty resource: this cloud is never detected in kvtrace builds.
func (detector) Detect(context.Context) (*resource.Resource, error) { return resource.Empty(), nil }

// NewResourceDetector returns a detector that finds nothing.
func NewResourceDetector() resource.Detector { return detector{} }
