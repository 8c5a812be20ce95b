// Package ec2 stands in for github.com/aws/aws-sdk-go-v2/service/ec2 in otelcol-kvtrace: the
// types and the two operations the collector's AWS resource detectors call, each failing with
// ErrNotIncluded (see go.mod for why the client is left out).
package ec2

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// ErrNotIncluded is what every EC2 API call returns in this distribution.
var ErrNotIncluded = errors.New("the EC2 API client is not part of otelcol-kvtrace " +
	"(tools/otelcol/stubs/ec2): instance tags and the eks detector's instance lookup need " +
	"the otel/opentelemetry-collector-contrib image; the ec2 detector reads the instance " +
	"metadata service without it (tags_from_imds for tags)")

// Options are the client's options (only the region is kept).
type Options struct {
	Region string
}

// Client is the EC2 API client; every operation fails with ErrNotIncluded.
type Client struct {
	options Options
}

// NewFromConfig returns a client whose operations fail with ErrNotIncluded.
func NewFromConfig(cfg aws.Config, optFns ...func(*Options)) *Client {
	options := Options{Region: cfg.Region}
	for _, fn := range optFns {
		fn(&options)
	}
	return &Client{options: options}
}

// DescribeTagsInput is the DescribeTags request.
type DescribeTagsInput struct {
	Filters    []types.Filter
	MaxResults *int32
	NextToken  *string
	DryRun     *bool
}

// DescribeTagsOutput is the DescribeTags response.
type DescribeTagsOutput struct {
	Tags      []types.TagDescription
	NextToken *string
}

// DescribeTagsAPIClient is what the ec2 detector asks of a client.
type DescribeTagsAPIClient interface {
	DescribeTags(context.Context, *DescribeTagsInput, ...func(*Options)) (*DescribeTagsOutput, error)
}

var _ DescribeTagsAPIClient = (*Client)(nil)

// DescribeTags fails with ErrNotIncluded.
func (*Client) DescribeTags(context.Context, *DescribeTagsInput, ...func(*Options)) (*DescribeTagsOutput, error) {
	return nil, &operationError{"DescribeTags"}
}

// DescribeInstancesInput is the DescribeInstances request.
type DescribeInstancesInput struct {
	InstanceIds []string
	Filters     []types.Filter
	MaxResults  *int32
	NextToken   *string
	DryRun      *bool
}

// DescribeInstancesOutput is the DescribeInstances response.
type DescribeInstancesOutput struct {
	Reservations []types.Reservation
	NextToken    *string
}

// DescribeInstances fails with ErrNotIncluded.
func (*Client) DescribeInstances(context.Context, *DescribeInstancesInput, ...func(*Options)) (*DescribeInstancesOutput, error) {
	return nil, &operationError{"DescribeInstances"}
}

// operationError names the operation asked for; errors.Is(err, ErrNotIncluded) holds.
type operationError struct{ operation string }

func (e *operationError) Error() string { return "ec2 " + e.operation + ": " + ErrNotIncluded.Error() }

func (e *operationError) Unwrap() error { return ErrNotIncluded }
