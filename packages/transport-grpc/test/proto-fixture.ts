/**
 * A message schema built without protoc: the FileDescriptorProto that protoc would
 * produce for
 *
 *   syntax = "proto3";
 *   package test.v1;
 *   message Inner { bool ok = 1; }
 *   message Gradient { string name = 1; repeated double values = 2; int64 step = 3; Inner inner = 4; }
 *
 * turned into descriptors by a file registry, and typed the way protoc-gen-es types
 * its generated `GradientSchema`.
 */
import { create, createFileRegistry } from '@bufbuild/protobuf';
import type { Message } from '@bufbuild/protobuf';
import type { GenMessage } from '@bufbuild/protobuf/codegenv2';
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';

export type Inner = Message<'test.v1.Inner'> & { ok: boolean };
export type Gradient = Message<'test.v1.Gradient'> & { name: string; values: number[]; step: bigint; inner?: Inner | undefined };

const file = create(FileDescriptorProtoSchema, {
  name: 'test/v1/gradient.proto',
  package: 'test.v1',
  syntax: 'proto3',
  messageType: [
    {
      name: 'Inner',
      field: [{ name: 'ok', number: 1, type: FieldDescriptorProto_Type.BOOL, label: FieldDescriptorProto_Label.OPTIONAL, jsonName: 'ok' }],
    },
    {
      name: 'Gradient',
      field: [
        { name: 'name', number: 1, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL, jsonName: 'name' },
        { name: 'values', number: 2, type: FieldDescriptorProto_Type.DOUBLE, label: FieldDescriptorProto_Label.REPEATED, jsonName: 'values' },
        { name: 'step', number: 3, type: FieldDescriptorProto_Type.INT64, label: FieldDescriptorProto_Label.OPTIONAL, jsonName: 'step' },
        {
          name: 'inner',
          number: 4,
          type: FieldDescriptorProto_Type.MESSAGE,
          typeName: '.test.v1.Inner',
          label: FieldDescriptorProto_Label.OPTIONAL,
          jsonName: 'inner',
        },
      ],
    },
  ],
});

const registry = createFileRegistry(file, () => undefined);

function message<T extends Message>(typeName: string): GenMessage<T> {
  const desc = registry.getMessage(typeName);
  if (desc === undefined) throw new Error(`the fixture has no ${typeName}`);
  return desc as unknown as GenMessage<T>;
}

export const InnerSchema = message<Inner>('test.v1.Inner');
export const GradientSchema = message<Gradient>('test.v1.Gradient');
