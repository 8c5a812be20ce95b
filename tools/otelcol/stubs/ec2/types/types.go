// Package types holds the EC2 API types the collector's AWS resource detectors name (the
// stand-in's client never returns any).
package types

// Filter narrows a Describe request.
type Filter struct {
	Name   *string
	Values []string
}

// Tag is a key and value on an EC2 resource.
type Tag struct {
	Key   *string
	Value *string
}

// TagDescription is a tag with the resource it is on.
type TagDescription struct {
	Key          *string
	ResourceId   *string
	ResourceType ResourceType
	Value        *string
}

// ResourceType is the type of a tagged resource.
type ResourceType string

// InstanceType is an instance's type (m5.large, ...).
type InstanceType string

// Instance is one EC2 instance.
type Instance struct {
	ImageId        *string
	InstanceId     *string
	InstanceType   InstanceType
	PrivateDnsName *string
	Tags           []Tag
}

// Reservation is a launch request's instances.
type Reservation struct {
	Instances []Instance
	OwnerId   *string
}
